#!/usr/bin/env python3
"""The mock KMS against a second, independent AWS SDK: boto3 (botocore has its own JSON 1.1
serialisers, SigV4 signer and error parser). Starts `sealed-sim kms` on 127.0.0.1, runs the
operations the project uses and the error shapes it relies on, and exits non-zero on any mismatch.

Usage: kms_sdk_check.py PATH/TO/sealed-sim   (scripts/test.sh runs it in a venv with boto3)
"""

import json
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.config
import botocore.exceptions

ACCOUNT = "111122223333"
OWNER = ("AKIASDKCHECKOWNER001", "owner-secret-for-the-boto3-check")
OUTSIDER = ("AKIASDKCHECKOUTSIDER", "outsider-secret-for-the-boto3-check")


def fail(message):
    print(f"kms_sdk_check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def expect_error(code, call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            fail(f"expected {code}, got {got}: {e}")
        return e.response["ResponseMetadata"]["HTTPStatusCode"]
    fail(f"expected {code}, the call succeeded")


def main():
    if len(sys.argv) != 2:
        fail("usage: kms_sdk_check.py PATH/TO/sealed-sim")
    sim = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="kms-sdk-check-") as tmp:
        creds = os.path.join(tmp, "credentials.json")
        with open(creds, "w") as f:
            json.dump(
                [
                    {"access_key_id": OWNER[0], "secret_access_key": OWNER[1],
                     "principal_arn": f"arn:aws:iam::{ACCOUNT}:role/model-owner"},
                    {"access_key_id": OUTSIDER[0], "secret_access_key": OUTSIDER[1],
                     "principal_arn": f"arn:aws:iam::{ACCOUNT}:role/outsider"},
                ],
                f,
            )
        server = subprocess.Popen(
            [sim, "kms", "--listen", "127.0.0.1:0", "--state", os.path.join(tmp, "state.json"),
             "--tls-dir", os.path.join(tmp, "tls"), "--credentials", creds],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
            ca = server.stdout.readline().strip().rsplit(" ", 1)[-1]
            if not url.startswith("https://localhost:"):
                fail(f"unexpected first line from sealed-sim kms: {url!r}")
            run_checks(url, ca)
        finally:
            server.terminate()
            server.wait(timeout=10)


def client(url, ca, key):
    return boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", verify=ca,
        aws_access_key_id=key[0], aws_secret_access_key=key[1],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def run_checks(url, ca):
    owner = client(url, ca, OWNER)
    outsider = client(url, ca, OUTSIDER)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "OwnerOnly", "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/model-owner"},
            "Action": "kms:*", "Resource": "*",
        }],
    }
    meta = owner.create_key(Policy=json.dumps(policy), Description="boto3 check")["KeyMetadata"]
    arn = meta["Arn"]
    if not arn.startswith(f"arn:aws:kms:us-east-1:{ACCOUNT}:key/") or meta["KeyId"] not in arn:
        fail(f"CreateKey metadata: {meta}")
    if owner.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Arn"] != arn:
        fail("DescribeKey by key id does not give the ARN")
    if json.loads(owner.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]) != policy:
        fail("GetKeyPolicy does not return the policy")

    dk = owner.generate_data_key(KeyId=arn, KeySpec="AES_256")
    if len(dk["Plaintext"]) != 32 or dk["KeyId"] != arn:
        fail("GenerateDataKey")
    if owner.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] != dk["Plaintext"]:
        fail("Decrypt does not return the data key")
    ct = owner.encrypt(KeyId=arn, Plaintext=b"hello", EncryptionContext={"k": "v"})
    pt = owner.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext={"k": "v"})
    if pt["Plaintext"] != b"hello":
        fail("Encrypt/Decrypt round trip")
    if len(owner.generate_random(NumberOfBytes=64)["Plaintext"]) != 64:
        fail("GenerateRandom")

    tampered = bytearray(dk["CiphertextBlob"])
    tampered[-1] ^= 1
    statuses = {
        "InvalidCiphertextException": expect_error(
            "InvalidCiphertextException", lambda: owner.decrypt(CiphertextBlob=bytes(tampered))),
        "InvalidCiphertextException (context)": expect_error(
            "InvalidCiphertextException",
            lambda: owner.decrypt(CiphertextBlob=ct["CiphertextBlob"],
                                  EncryptionContext={"k": "other"})),
        "NotFoundException": expect_error(
            "NotFoundException",
            lambda: owner.describe_key(KeyId="00000000-0000-4000-8000-000000000000")),
        "AccessDeniedException": expect_error(
            "AccessDeniedException", lambda: outsider.generate_data_key(KeyId=arn, KeySpec="AES_256")),
        "InvalidSignatureException": expect_error(
            "InvalidSignatureException",
            lambda: client(url, ca, (OWNER[0], "wrong-secret")).describe_key(KeyId=arn)),
        "UnrecognizedClientException": expect_error(
            "UnrecognizedClientException",
            lambda: client(url, ca, ("AKIAUNKNOWNKEY000001", "x")).describe_key(KeyId=arn)),
    }
    if statuses["AccessDeniedException"] != 400 or statuses["NotFoundException"] != 400:
        fail(f"HTTP statuses: {statuses}")
    print("kms_sdk_check: boto3 " + boto3.__version__ + " against the mock KMS: CreateKey, DescribeKey, "
          "GetKeyPolicy, GenerateDataKey, Decrypt, Encrypt, GenerateRandom and "
          + ", ".join(statuses) + " as expected")


if __name__ == "__main__":
    main()

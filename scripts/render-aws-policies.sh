#!/usr/bin/env bash
# Fills the AWS policy templates in deploy/aws/ (see deploy/aws/README.md) with a release's
# measurements and the account's principals:
#
#   OUT/kms-key-policy.json              key policy: owner administers + seals; the instance role
#                                        may kms:Decrypt only for an enclave with these PCRs
#   OUT/instance-role-trust-policy.json  EC2 may assume the instance role
#   OUT/instance-role-policy.json        the role's permissions (attested kms:Decrypt only)
#
# The PCR conditions use kms:RecipientAttestation:ImageSha384 (= PCR0) and
# kms:RecipientAttestation:PCR1 / PCR2, lower-case hex (AWS KMS Developer Guide, "Condition keys
# for AWS Nitro Enclaves"). Give --measurements once per release to accept (rolling upgrades):
# one attested statement per release. python3 standard library only (Amazon Linux 2023 has it).
# It prints the AWS CLI commands that apply the files; it runs none of them.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/render-aws-policies.sh --measurements FILE [--measurements FILE ...]
           --account ID --instance-role-arn ARN --admin-arn ARN --out DIR [--key-arn ARN]

Render the KMS key policy and the instance role's IAM policies for a release.

  --measurements FILE     measurements.json from scripts/build-eif.sh (nitro-cli's format:
                          {"Measurements": {"PCR0": ..., "PCR1": ..., "PCR2": ...}}); repeat it to
                          accept several releases during a rolling upgrade
  --account ID            12-digit AWS account id of the key and the role
  --instance-role-arn ARN IAM role of the parent EC2 instance (arn:aws:iam::ID:role/NAME)
  --admin-arn ARN         the model owner who administers the key and seals models
  --key-arn ARN           the KMS key, for the role's permissions policy
                          (default: every key of the account, arn:aws:kms:*:ID:key/*)
  --out DIR               where to write the three JSON files
  -h, --help              this text
EOF
}

die() {
    echo "render-aws-policies.sh: error: $*" >&2
    exit 1
}

measurements=()
account=""
role_arn=""
admin_arn=""
key_arn=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --measurements | --account | --instance-role-arn | --admin-arn | --key-arn | --out)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --measurements) measurements+=("$2") ;;
                --account) account="$2" ;;
                --instance-role-arn) role_arn="$2" ;;
                --admin-arn) admin_arn="$2" ;;
                --key-arn) key_arn="$2" ;;
                --out) out="$2" ;;
            esac
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

[ "${#measurements[@]}" -gt 0 ] || die "--measurements is required"
[ -n "$account" ] || die "--account is required"
[ -n "$role_arn" ] || die "--instance-role-arn is required"
[ -n "$admin_arn" ] || die "--admin-arn is required"
[ -n "$out" ] || die "--out is required"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

templates="$(cd "$(dirname "${BASH_SOURCE[0]}")/../deploy/aws" && pwd)"
mkdir -p "$out"

R_ACCOUNT="$account" R_ROLE_ARN="$role_arn" R_ADMIN_ARN="$admin_arn" R_KEY_ARN="$key_arn" \
    python3 - "$templates" "$out" "${measurements[@]}" <<'PY'
import copy, json, os, re, sys

def die(msg):
    print("render-aws-policies.sh: error: " + msg, file=sys.stderr)
    sys.exit(1)

templates, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
account = os.environ["R_ACCOUNT"]
role_arn = os.environ["R_ROLE_ARN"]
admin_arn = os.environ["R_ADMIN_ARN"]
key_arn = os.environ["R_KEY_ARN"]

if not re.fullmatch(r"\d{12}", account):
    die("--account must be a 12-digit AWS account id, got %r" % account)

# IAM ARNs (IAM User Guide, "IAM identifiers"): arn:PARTITION:iam::ACCOUNT:role/PATH/NAME etc.
PARTITIONS = "aws|aws-cn|aws-us-gov"
m = re.fullmatch(r"arn:(%s):iam::(\d{12}):role/[\w+=,.@/-]{1,512}" % PARTITIONS, role_arn)
if not m:
    die("--instance-role-arn must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got %r" % role_arn)
partition = m.group(1)
if m.group(2) != account:
    die("--instance-role-arn is in account %s, not %s" % (m.group(2), account))
m = re.fullmatch(r"arn:(%s):iam::(\d{12}):(root|(role|user)/[\w+=,.@/-]{1,512})" % PARTITIONS, admin_arn)
if not m:
    die("--admin-arn must be an IAM role, user or root ARN, got %r" % admin_arn)
if m.group(1) != partition or m.group(2) != account:
    die("--admin-arn must be in partition %s, account %s (got %r)" % (partition, account, admin_arn))
if key_arn:
    if not re.fullmatch(r"arn:%s:kms:[a-z0-9-]+:%s:key/[A-Za-z0-9-]{1,128}" % (partition, account), key_arn):
        die("--key-arn must be a KMS key ARN in account %s (arn:%s:kms:REGION:%s:key/ID), got %r"
            % (account, partition, account, key_arn))
else:
    key_arn = "arn:%s:kms:*:%s:key/*" % (partition, account)

# measurements.json: nitro-cli build-enclave / describe-eif output; extra keys are allowed,
# hex of either case; KMS wants lower case.
releases = []
for path in files:
    try:
        with open(path) as f:
            if os.fstat(f.fileno()).st_size > 1 << 20:
                raise ValueError("larger than 1 MiB")
            doc = json.load(f)
        ms = doc["Measurements"]
        pcrs = {}
        for i in (0, 1, 2):
            v = ms["PCR%d" % i]
            if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{96}", v):
                raise ValueError("PCR%d is not 96 hex digits (SHA-384)" % i)
            if set(v) == {"0"}:
                raise ValueError("PCR%d is all zeros (a debug-mode measurement never attests)" % i)
            pcrs["PCR%d" % i] = v.lower()
    except (OSError, ValueError, KeyError, TypeError) as e:
        die("%s: not a usable measurements.json: %s" % (path, e if not isinstance(e, KeyError) else "missing %s" % e))
    if pcrs not in releases:
        releases.append(pcrs)

values = {"ACCOUNT_ID": account, "ADMIN_ARN": admin_arn, "INSTANCE_ROLE_ARN": role_arn,
          "KEY_ARN": key_arn}

def fill(node, extra):
    if isinstance(node, str):
        def sub(m):
            name = m.group(1)
            if name in extra:
                return extra[name]
            if name in values:
                return values[name]
            die("template placeholder ${%s} has no value" % name)
        return re.sub(r"\$\{([A-Z0-9_]+)\}", sub, node)
    if isinstance(node, list):
        return [fill(x, extra) for x in node]
    if isinstance(node, dict):
        return {k: fill(v, extra) for k, v in node.items()}
    return node

ATTESTED = "AttestedEnclaveDecrypts"

def render(name):
    with open(os.path.join(templates, name)) as f:
        doc = json.load(f)
    statements = []
    for st in doc["Statement"]:
        if st.get("Sid") == ATTESTED:
            # One statement per accepted release: any one of them allows.
            for n, pcrs in enumerate(releases, 1):
                s = fill(copy.deepcopy(st), pcrs)
                if len(releases) > 1:
                    s["Sid"] = "%s%d" % (ATTESTED, n)
                statements.append(s)
        else:
            statements.append(fill(st, {}))
    doc["Statement"] = statements
    text = json.dumps(doc, indent=2) + "\n"
    if "${" in text:
        die("%s: unfilled placeholder left" % name)
    # AWS limits: key policy 32 KiB, inline role policy 10,240 characters.
    limit = 32768 if name.startswith("kms-") else 10240
    if len(text) > limit:
        die("%s: rendered policy is %d bytes, over AWS's %d limit (fewer --measurements)" % (name, len(text), limit))
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    return os.path.join(out, name)

written = [render(n) for n in ("kms-key-policy.json", "instance-role-trust-policy.json", "instance-role-policy.json")]
for i, pcrs in enumerate(releases, 1):
    print("release %d: PCR0 %s" % (i, pcrs["PCR0"]))
for path in written:
    print("wrote " + path)
role_name = role_arn.rsplit("/", 1)[1]
print("""
Apply (AWS CLI; review the files first):
  aws iam create-role --role-name {r} --assume-role-policy-document file://{o}/instance-role-trust-policy.json
  aws iam put-role-policy --role-name {r} --policy-name sealed-enclave-kms --policy-document file://{o}/instance-role-policy.json
  aws iam create-instance-profile --instance-profile-name {r}
  aws iam add-role-to-instance-profile --instance-profile-name {r} --role-name {r}
  aws kms create-key --description "sealed-inference models" --policy file://{o}/kms-key-policy.json
  # later releases: aws kms put-key-policy --key-id KEY_ARN --policy-name default --policy file://{o}/kms-key-policy.json"""
      .format(r=role_name, o=os.path.abspath(out)))
PY

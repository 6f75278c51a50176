//! End-to-end behaviour of the sealed channel through the public API: a client seals, the server
//! opens and answers, the client opens the answer; and everything an attacker in the middle can do
//! to the bytes fails with the one opaque error.

use proptest::prelude::*;
use rand_core::UnwrapErr;
use sealed_crypto::{
    AEAD_ID, HeaderError, KDF_ID, KEM_ID, KeyConfig, MAX_ENCAPSULATED_REQUEST_LEN,
    MAX_ENCAPSULATED_RESPONSE_LEN, MAX_PLAINTEXT_LEN, OpenError, PreparedRequest,
    REQUEST_HEADER_LEN, REQUEST_OVERHEAD, REQUEST_PREFIX_LEN, RESPONSE_OVERHEAD, ResponseOpener,
    ResponseSealer, SealError, ServerKey, request_key_id, seal_request,
};

fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

fn server(key_id: u8) -> ServerKey {
    ServerKey::generate(key_id, &mut rng())
}

const REQUEST: &[u8] = b"{\"model\":\"mnist\",\"inputs\":[1,2,3]}";
const RESPONSE: &[u8] = b"{\"outputs\":[0.1,0.9]}";

/// A sealed request and its opener, addressed to `key`.
fn sealed(key: &ServerKey, plaintext: &[u8]) -> (Vec<u8>, ResponseOpener) {
    seal_request(&key.config(), plaintext, &mut rng()).unwrap()
}

/// A sealed response to `request`, opened by the server `key`.
fn answered(key: &ServerKey, request: &[u8]) -> Vec<u8> {
    let (_, sealer) = key.open_request(request).unwrap();
    sealer.seal(RESPONSE, &mut rng()).unwrap()
}

#[test]
fn request_and_response_round_trip() {
    let key = server(1);
    let (request, opener) = sealed(&key, REQUEST);
    let (plaintext, sealer) = key.open_request(&request).unwrap();
    assert_eq!(plaintext.as_slice(), REQUEST);
    let response = sealer.seal(RESPONSE, &mut rng()).unwrap();
    assert_eq!(opener.open(&response).unwrap().as_slice(), RESPONSE);
}

/// A request set up ahead seals and opens like any other, and knows which key it was made for.
#[test]
fn a_request_set_up_ahead_round_trips_for_its_key_only() {
    let key = server(3);
    let prepared = PreparedRequest::new(&key.config(), &mut rng()).unwrap();
    assert!(prepared.is_for(&key.config()));
    // Another key under the same id, and the same key under another id, are not its key.
    assert!(!prepared.is_for(&server(3).config()));
    let mut other_id = key.config();
    other_id.key_id = 4;
    assert!(!prepared.is_for(&other_id));

    let mut buf = vec![0u8; REQUEST_PREFIX_LEN];
    buf.extend_from_slice(REQUEST);
    let opener = prepared.seal_in_place(&mut buf).unwrap();
    let (plaintext, sealer) = key.open_request(&buf).unwrap();
    assert_eq!(plaintext.as_slice(), REQUEST);
    let response = sealer.seal(RESPONSE, &mut rng()).unwrap();
    assert_eq!(opener.open(&response).unwrap().as_slice(), RESPONSE);
    // Made ahead for one key, it does not open under another.
    let stale = PreparedRequest::new(&server(3).config(), &mut rng()).unwrap();
    let mut buf = vec![0u8; REQUEST_PREFIX_LEN];
    buf.extend_from_slice(REQUEST);
    stale.seal_in_place(&mut buf).unwrap();
    assert!(key.open_request(&buf).is_err());
}

/// A buffer without room for the header is refused and wiped, as by `seal_request_in_place`.
#[test]
fn a_request_set_up_ahead_refuses_a_buffer_without_room() {
    let key = server(1);
    let prepared = PreparedRequest::new(&key.config(), &mut rng()).unwrap();
    let mut buf = vec![7u8; REQUEST_PREFIX_LEN - 1];
    assert!(prepared.seal_in_place(&mut buf).is_err());
    assert!(buf.is_empty());
}

#[test]
fn empty_plaintexts_round_trip() {
    let key = server(1);
    let (request, opener) = sealed(&key, b"");
    assert_eq!(request.len(), REQUEST_OVERHEAD);
    let (plaintext, sealer) = key.open_request(&request).unwrap();
    assert!(plaintext.is_empty());
    let response = sealer.seal(b"", &mut rng()).unwrap();
    assert_eq!(response.len(), RESPONSE_OVERHEAD);
    assert!(opener.open(&response).unwrap().is_empty());
}

#[test]
fn request_has_rfc9458_layout() {
    let key = server(0x2a);
    let (request, _) = sealed(&key, REQUEST);
    assert_eq!(request.len(), REQUEST_OVERHEAD + REQUEST.len());
    let mut hdr = vec![0x2a];
    hdr.extend_from_slice(&KEM_ID.to_be_bytes());
    hdr.extend_from_slice(&KDF_ID.to_be_bytes());
    hdr.extend_from_slice(&AEAD_ID.to_be_bytes());
    assert_eq!(&request[..REQUEST_HEADER_LEN], hdr.as_slice());
    // The plaintext does not appear in the clear.
    assert!(!request.windows(REQUEST.len()).any(|w| w == REQUEST));
}

#[test]
fn response_has_rfc9458_layout() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    let response = answered(&key, &request);
    assert_eq!(response.len(), RESPONSE_OVERHEAD + RESPONSE.len());
    assert!(!response.windows(RESPONSE.len()).any(|w| w == RESPONSE));
}

#[test]
fn sealing_twice_gives_different_bytes() {
    let key = server(1);
    let (a, _) = sealed(&key, REQUEST);
    let (b, _) = sealed(&key, REQUEST);
    assert_ne!(a, b);
    // Different ephemeral keys, hence different `enc`.
    assert_ne!(a[REQUEST_HEADER_LEN..][..32], b[REQUEST_HEADER_LEN..][..32]);
}

#[test]
fn tampering_with_any_request_byte_fails_to_open() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    for i in 0..request.len() {
        for flip in [0x01u8, 0x80] {
            let mut tampered = request.clone();
            tampered[i] ^= flip;
            assert_eq!(
                key.open_request(&tampered).err(),
                Some(OpenError),
                "byte {i} ^ {flip:#04x} went unnoticed"
            );
        }
    }
    // The untouched request still opens: the failures above come from the tampering.
    assert!(key.open_request(&request).is_ok());
}

#[test]
fn tampering_with_any_response_byte_fails_to_open() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    let response = answered(&key, &request);
    for i in 0..response.len() {
        // Each opener opens once; a fresh request gives a fresh opener for every position.
        let (request, opener) = sealed(&key, REQUEST);
        let mut tampered = answered(&key, &request);
        tampered[i] ^= 0x01;
        assert_eq!(
            opener.open(&tampered).err(),
            Some(OpenError),
            "byte {i} went unnoticed"
        );
    }
}

#[test]
fn response_cannot_be_opened_with_another_requests_opener() {
    let key = server(1);
    let (request_a, _opener_a) = sealed(&key, REQUEST);
    let (_request_b, opener_b) = sealed(&key, REQUEST);
    let response_a = answered(&key, &request_a);
    assert_eq!(opener_b.open(&response_a).err(), Some(OpenError));
}

#[test]
fn response_sealed_for_one_request_cannot_be_replayed_to_another_client() {
    // Two clients send byte-identical plaintexts; each response opens only for its own client.
    let key = server(1);
    let (request_a, opener_a) = sealed(&key, REQUEST);
    let (request_b, opener_b) = sealed(&key, REQUEST);
    let response_a = answered(&key, &request_a);
    let response_b = answered(&key, &request_b);
    assert_eq!(opener_a.open(&response_b).err(), Some(OpenError));
    assert_eq!(opener_b.open(&response_a).err(), Some(OpenError));
}

#[test]
fn request_for_another_key_with_the_same_id_fails_to_open() {
    let ours = server(1);
    let theirs = server(1);
    let (request, _) = sealed(&theirs, REQUEST);
    assert_eq!(ours.check_header(&request), Ok(()));
    assert_eq!(ours.open_request(&request).err(), Some(OpenError));
}

#[test]
fn wrong_key_id_fails_to_open_and_check_header_names_it() {
    let key = server(1);
    let other_id = KeyConfig {
        key_id: 2,
        ..key.config()
    };
    let (request, _) = seal_request(&other_id, REQUEST, &mut rng()).unwrap();
    assert_eq!(key.open_request(&request).err(), Some(OpenError));
    assert_eq!(
        key.check_header(&request),
        Err(HeaderError::UnknownKeyId {
            key_id: 2,
            expected: 1
        })
    );
}

#[test]
fn request_key_id_reads_any_key_id_but_checks_length_and_suite() {
    // A server with several keys (a rotation overlap) picks the key by this id.
    for id in [0u8, 1, 200, 255] {
        let (request, _) = sealed(&server(id), REQUEST);
        assert_eq!(request_key_id(&request), Ok(id));
    }
    let (request, _) = sealed(&server(3), REQUEST);
    let mut other_suite = request.clone();
    other_suite[5..7].copy_from_slice(&0x0001u16.to_be_bytes());
    assert!(matches!(
        request_key_id(&other_suite),
        Err(HeaderError::UnsupportedSuite { .. })
    ));
    assert!(matches!(
        request_key_id(&request[..REQUEST_OVERHEAD - 1]),
        Err(HeaderError::Truncated { .. })
    ));
    assert!(matches!(
        request_key_id(&vec![0u8; MAX_ENCAPSULATED_REQUEST_LEN + 1]),
        Err(HeaderError::TooLarge { .. })
    ));
}

#[test]
fn wrong_suite_ids_fail_to_open_and_check_header_names_them() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    for (offset, value) in [(1usize, 0x0010u16), (3, 0x0002), (5, 0x0001)] {
        let mut other = request.clone();
        other[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
        assert_eq!(key.open_request(&other).err(), Some(OpenError));
        assert!(matches!(
            key.check_header(&other),
            Err(HeaderError::UnsupportedSuite { .. })
        ));
    }
}

#[test]
fn check_header_accepts_own_requests_and_rejects_short_or_oversized_ones() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    assert_eq!(key.check_header(&request), Ok(()));
    assert_eq!(
        key.check_header(&request[..REQUEST_OVERHEAD - 1]),
        Err(HeaderError::Truncated {
            len: REQUEST_OVERHEAD - 1,
            min: REQUEST_OVERHEAD
        })
    );
    let oversized = vec![0u8; MAX_ENCAPSULATED_REQUEST_LEN + 1];
    assert!(matches!(
        key.check_header(&oversized),
        Err(HeaderError::TooLarge { .. })
    ));
}

#[test]
fn truncated_or_extended_request_fails_to_open() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    for len in 0..request.len() {
        assert_eq!(
            key.open_request(&request[..len]).err(),
            Some(OpenError),
            "prefix of {len} bytes"
        );
    }
    let mut extended = request.clone();
    extended.push(0);
    assert_eq!(key.open_request(&extended).err(), Some(OpenError));
}

#[test]
fn truncated_or_extended_response_fails_to_open() {
    let key = server(1);
    let (request, _) = sealed(&key, REQUEST);
    let response = answered(&key, &request);
    for len in 0..response.len() {
        let (request, opener) = sealed(&key, REQUEST);
        let response = answered(&key, &request);
        assert_eq!(
            opener.open(&response[..len]).err(),
            Some(OpenError),
            "prefix of {len} bytes"
        );
    }
    let (request, opener) = sealed(&key, REQUEST);
    let mut extended = answered(&key, &request);
    extended.push(0);
    assert_eq!(opener.open(&extended).err(), Some(OpenError));
}

#[test]
fn oversized_inputs_are_refused_before_any_work() {
    let key = server(1);
    let too_big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    assert_eq!(
        seal_request(&key.config(), &too_big, &mut rng()).err(),
        Some(SealError::PlaintextTooLarge {
            len: MAX_PLAINTEXT_LEN + 1,
            max: MAX_PLAINTEXT_LEN
        })
    );
    let (request, opener) = sealed(&key, REQUEST);
    let (_, sealer) = key.open_request(&request).unwrap();
    assert_eq!(
        sealer.seal(&too_big, &mut rng()).err(),
        Some(SealError::PlaintextTooLarge {
            len: MAX_PLAINTEXT_LEN + 1,
            max: MAX_PLAINTEXT_LEN
        })
    );
    let huge_request = vec![0u8; MAX_ENCAPSULATED_REQUEST_LEN + 1];
    assert_eq!(key.open_request(&huge_request).err(), Some(OpenError));
    let huge_response = vec![0u8; MAX_ENCAPSULATED_RESPONSE_LEN + 1];
    assert_eq!(opener.open(&huge_response).err(), Some(OpenError));
}

#[test]
fn largest_request_is_sealed_and_opened() {
    // The bounds are inclusive: a maximum-size request is not refused by an off-by-one.
    // (One direction only: 16 MiB of AES-GCM is slow in a debug build.)
    let key = server(1);
    let big = vec![0x5au8; MAX_PLAINTEXT_LEN];
    let (request, _) = seal_request(&key.config(), &big, &mut rng()).unwrap();
    assert_eq!(request.len(), MAX_ENCAPSULATED_REQUEST_LEN);
    assert_eq!(key.check_header(&request), Ok(()));
    let (plaintext, _) = key.open_request(&request).unwrap();
    assert!(plaintext.as_slice() == big.as_slice());
}

#[test]
fn sealing_to_a_low_order_public_key_is_refused() {
    // The all-zero point makes every X25519 shared secret zero (RFC 9180 §7.1.4).
    let config = KeyConfig {
        key_id: 1,
        public_key: [0u8; 32],
    };
    assert_eq!(
        seal_request(&config, REQUEST, &mut rng()).err(),
        Some(SealError::InvalidPublicKey)
    );
}

#[test]
fn key_config_round_trips_through_its_encoding() {
    let key = server(7);
    let encoded = key.config().encode();
    assert_eq!(encoded.len(), 41);
    let decoded = KeyConfig::decode(&encoded).unwrap();
    assert_eq!(decoded, key.config());
    // A client that only saw the encoding reaches the server.
    let (request, _) = seal_request(&decoded, REQUEST, &mut rng()).unwrap();
    assert_eq!(key.open_request(&request).unwrap().0.as_slice(), REQUEST);
}

// Secret holders must never gain `Debug` (STYLE.md): this fails to compile if one does, by the
// same ambiguity trick as `static_assertions::assert_not_impl_any!`.
trait AmbiguousIfDebug<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfDebug<()> for T {}
impl<T: ?Sized + std::fmt::Debug> AmbiguousIfDebug<u8> for T {}
const _: fn() = || {
    <ServerKey as AmbiguousIfDebug<_>>::check();
    <ResponseSealer as AmbiguousIfDebug<_>>::check();
    <ResponseOpener as AmbiguousIfDebug<_>>::check();
};

// Secret holders carry the `ZeroizeOnDrop` marker; fails to compile if one loses it.
const _: fn() = || {
    #[allow(clippy::extra_unused_type_parameters)] // the bound is the whole point
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<ServerKey>();
    zeroize_on_drop::<ResponseSealer>();
    zeroize_on_drop::<ResponseOpener>();
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn open_request_refuses_arbitrary_bytes_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let key = ServerKey::derive(1, &[7u8; 32]);
        prop_assert_eq!(key.open_request(&bytes).err(), Some(OpenError));
        let _ = key.check_header(&bytes);
    }

    #[test]
    fn open_request_refuses_arbitrary_bytes_behind_a_valid_header(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Gets past the header check into KEM decapsulation and AEAD.
        let key = ServerKey::derive(1, &[7u8; 32]);
        let (request, _) = seal_request(&key.config(), b"", &mut rng()).unwrap();
        let mut bytes = request[..REQUEST_HEADER_LEN].to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(key.open_request(&bytes).err(), Some(OpenError));
    }

    #[test]
    fn response_opener_refuses_arbitrary_bytes_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let key = ServerKey::derive(1, &[7u8; 32]);
        let (_, opener) = seal_request(&key.config(), REQUEST, &mut rng()).unwrap();
        prop_assert_eq!(opener.open(&bytes).err(), Some(OpenError));
    }

    #[test]
    fn key_config_decode_accepts_only_the_canonical_layout(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let canonical = bytes.len() == 41
            && bytes[1..3] == [0x00, 0x20]
            && bytes[35..] == [0x00, 0x04, 0x00, 0x01, 0x00, 0x02];
        match KeyConfig::decode(&bytes) {
            Ok(config) => {
                prop_assert!(canonical);
                prop_assert_eq!(config.encode(), bytes);
            }
            Err(_) => prop_assert!(!canonical),
        }
    }

    #[test]
    fn key_config_decode_inverts_encode(key_id in any::<u8>(), public_key in any::<[u8; 32]>()) {
        let config = KeyConfig { key_id, public_key };
        prop_assert_eq!(KeyConfig::decode(&config.encode()), Ok(config));
    }

    #[test]
    fn arbitrary_plaintexts_round_trip(
        request in proptest::collection::vec(any::<u8>(), 0..512),
        response in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let key = ServerKey::derive(3, &[9u8; 32]);
        let (sealed, opener) = seal_request(&key.config(), &request, &mut rng()).unwrap();
        let (opened, sealer) = key.open_request(&sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), request.as_slice());
        let sealed = sealer.seal(&response, &mut rng()).unwrap();
        let opened = opener.open(&sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), response.as_slice());
    }
}

//! Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, exactly as in the WireGuard
//! whitepaper §5.4. Each function is one message of the pattern; the
//! comments name the whitepaper's equations so the code can be checked
//! against it line by line. MACs are not computed here (see `cookie`).

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::{aead_open, aead_seal, dh, hash, kdf1, kdf2, kdf3, Secret, KEY_LEN, TAG_LEN};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::tai64n::Tai64N;
use crate::wire::{self, INITIATION_LEN, RESPONSE_LEN};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Why a handshake message was not accepted. Kept coarse on purpose: the
/// sender learns nothing, and the device only counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// AEAD failed: wrong keys, tampered, or not for us.
    Decrypt,
    /// A DH produced the all-zero secret (low-order point).
    LowOrderPoint,
}

/// `C0 = HASH(CONSTRUCTION)` and `H0 = HASH(C0 || IDENTIFIER)`.
fn initial_chain() -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&ck, IDENTIFIER]);
    (ck, h)
}

/// `H = HASH(H0 || responder_static)`: the hash both sides start from when
/// `responder` is the responder. Cached per key by the caller.
pub(crate) fn initial_hash(responder: &PublicKey) -> [u8; KEY_LEN] {
    let (_, h0) = initial_chain();
    hash(&[&h0, responder.as_bytes()])
}

fn mix_hash(h: &mut [u8; KEY_LEN], data: &[u8]) {
    *h = hash(&[h.as_slice(), data]);
}

/// The symmetric keys a completed handshake yields.
pub(crate) struct TransportKeys {
    pub(crate) send: Secret,
    pub(crate) recv: Secret,
}

/// What the initiator keeps between sending the initiation and receiving
/// the response.
pub(crate) struct InitiatorState {
    pub(crate) local_index: u32,
    hash: [u8; KEY_LEN],
    chaining_key: Secret,
    ephemeral: x25519_dalek::StaticSecret,
}

/// The initiator's side, before MACs: returns the message with zeroed
/// MAC fields, and the state to consume the response with.
pub(crate) fn create_initiation(
    local_public: &PublicKey,
    remote: &PublicKey,
    remote_initial_hash: &[u8; KEY_LEN],
    static_static: &Secret,
    local_index: u32,
    timestamp: Tai64N,
    rng: &mut (impl RngCore + CryptoRng),
) -> ([u8; INITIATION_LEN], InitiatorState) {
    let mut msg = [0u8; INITIATION_LEN];
    msg[0] = wire::MSG_INITIATION;
    msg[wire::INIT_SENDER..wire::INIT_SENDER + 4].copy_from_slice(&local_index.to_le_bytes());

    let (c0, _) = initial_chain();
    let mut h = *remote_initial_hash;
    // (Ei_priv, Ei_pub) = DH_GENERATE(); C = KDF1(C, Ei_pub); H = HASH(H || Ei_pub)
    let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rng);
    let e_pub = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let ck = kdf1(&c0, &e_pub);
    msg[wire::INIT_EPHEMERAL..wire::INIT_EPHEMERAL + 32].copy_from_slice(&e_pub);
    mix_hash(&mut h, &e_pub);

    // (C, k) = KDF2(C, DH(Ei_priv, Sr_pub)); static = AEAD(k, 0, Si_pub, H)
    // An all-zero DH here means the peer's configured key is low order: the
    // initiation is still sent (it will fail at the peer), nothing leaks.
    let es = dh(&ephemeral, remote.as_bytes()).unwrap_or_else(|| Zeroizing::new([0u8; KEY_LEN]));
    let (ck, k) = kdf2(&ck, &*es);
    let static_field = &mut msg[wire::INIT_STATIC..wire::INIT_STATIC + 32 + TAG_LEN];
    aead_seal(&k, 0, local_public.as_bytes(), &h, static_field);
    mix_hash(&mut h, static_field);

    // (C, k) = KDF2(C, DH(Si_priv, Sr_pub)); timestamp = AEAD(k, 0, TAI64N, H)
    let (ck, k) = kdf2(&ck, &**static_static);
    let ts_field = &mut msg[wire::INIT_TIMESTAMP..wire::INIT_TIMESTAMP + 12 + TAG_LEN];
    aead_seal(&k, 0, &timestamp.0, &h, ts_field);
    mix_hash(&mut h, ts_field);

    (
        msg,
        InitiatorState {
            local_index,
            hash: h,
            chaining_key: ck,
            ephemeral,
        },
    )
}

/// What a responder learns from a valid initiation.
pub(crate) struct ConsumedInitiation {
    pub(crate) remote_static: PublicKey,
    pub(crate) remote_index: u32,
    pub(crate) timestamp: Tai64N,
    remote_ephemeral: [u8; KEY_LEN],
    hash: [u8; KEY_LEN],
    chaining_key: Secret,
}

/// The responder's reading of an initiation. `static_static` looks up the
/// precomputed `DH(Sr_priv, Si_pub)` for a peer, or `None` if the initiator
/// is not one of ours (the message is then dropped).
pub(crate) fn consume_initiation(
    local: &PrivateKey,
    local_initial_hash: &[u8; KEY_LEN],
    msg: &[u8; INITIATION_LEN],
) -> Result<ConsumedInitiation, HandshakeError> {
    let (c0, _) = initial_chain();
    let mut h = *local_initial_hash;
    let e_pub: [u8; 32] = wire::array(msg, wire::INIT_EPHEMERAL);
    let ck = kdf1(&c0, &e_pub);
    mix_hash(&mut h, &e_pub);

    let es = dh(local.secret(), &e_pub).ok_or(HandshakeError::LowOrderPoint)?;
    let (ck, k) = kdf2(&ck, &*es);
    let static_field = &msg[wire::INIT_STATIC..wire::INIT_STATIC + 32 + TAG_LEN];
    let mut remote_static = [0u8; KEY_LEN];
    aead_open(&k, 0, static_field, &h, &mut remote_static).map_err(|_| HandshakeError::Decrypt)?;
    mix_hash(&mut h, static_field);

    let ss = dh(local.secret(), &remote_static).ok_or(HandshakeError::LowOrderPoint)?;
    let (ck, k) = kdf2(&ck, &*ss);
    let ts_field = &msg[wire::INIT_TIMESTAMP..wire::INIT_TIMESTAMP + 12 + TAG_LEN];
    let mut ts = [0u8; 12];
    aead_open(&k, 0, ts_field, &h, &mut ts).map_err(|_| HandshakeError::Decrypt)?;
    mix_hash(&mut h, ts_field);

    Ok(ConsumedInitiation {
        remote_static: PublicKey(remote_static),
        remote_index: wire::read_u32(msg, wire::INIT_SENDER),
        timestamp: Tai64N(ts),
        remote_ephemeral: e_pub,
        hash: h,
        chaining_key: ck,
    })
}

/// The responder's answer, before MACs, and the transport keys it yields.
pub(crate) fn create_response(
    init: &ConsumedInitiation,
    psk: &PresharedKey,
    local_index: u32,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<([u8; RESPONSE_LEN], TransportKeys), HandshakeError> {
    let mut msg = [0u8; RESPONSE_LEN];
    msg[0] = wire::MSG_RESPONSE;
    msg[wire::RESP_SENDER..wire::RESP_SENDER + 4].copy_from_slice(&local_index.to_le_bytes());
    msg[wire::RESP_RECEIVER..wire::RESP_RECEIVER + 4]
        .copy_from_slice(&init.remote_index.to_le_bytes());

    let mut h = init.hash;
    // (Er_priv, Er_pub) = DH_GENERATE(); C = KDF1(C, Er_pub); H = HASH(H || Er_pub)
    let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rng);
    let e_pub = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let ck = kdf1(&init.chaining_key, &e_pub);
    msg[wire::RESP_EPHEMERAL..wire::RESP_EPHEMERAL + 32].copy_from_slice(&e_pub);
    mix_hash(&mut h, &e_pub);
    // C = KDF1(C, DH(Er_priv, Ei_pub)); C = KDF1(C, DH(Er_priv, Si_pub))
    let ee = dh(&ephemeral, &init.remote_ephemeral).ok_or(HandshakeError::LowOrderPoint)?;
    let ck = kdf1(&ck, &*ee);
    let se = dh(&ephemeral, init.remote_static.as_bytes()).ok_or(HandshakeError::LowOrderPoint)?;
    let ck = kdf1(&ck, &*se);
    // (C, τ, k) = KDF3(C, Q); H = HASH(H || τ); empty = AEAD(k, 0, ε, H)
    let (ck, tau, k) = kdf3(&ck, psk.as_bytes());
    mix_hash(&mut h, &*tau);
    let empty = &mut msg[wire::RESP_EMPTY..wire::RESP_EMPTY + TAG_LEN];
    aead_seal(&k, 0, &[], &h, empty);
    // (T_recv, T_send) = KDF2(C, ε) for the responder.
    let (recv, send) = kdf2(&ck, &[]);
    Ok((msg, TransportKeys { send, recv }))
}

/// The initiator's reading of a response to `state`.
pub(crate) fn consume_response(
    state: &InitiatorState,
    local: &PrivateKey,
    psk: &PresharedKey,
    msg: &[u8; RESPONSE_LEN],
) -> Result<TransportKeys, HandshakeError> {
    let mut h = state.hash;
    let e_pub: [u8; 32] = wire::array(msg, wire::RESP_EPHEMERAL);
    let ck = kdf1(&state.chaining_key, &e_pub);
    mix_hash(&mut h, &e_pub);
    let ee = dh(&state.ephemeral, &e_pub).ok_or(HandshakeError::LowOrderPoint)?;
    let ck = kdf1(&ck, &*ee);
    let se = dh(local.secret(), &e_pub).ok_or(HandshakeError::LowOrderPoint)?;
    let ck = kdf1(&ck, &*se);
    let (ck, tau, k) = kdf3(&ck, psk.as_bytes());
    mix_hash(&mut h, &*tau);
    let empty = &msg[wire::RESP_EMPTY..wire::RESP_EMPTY + TAG_LEN];
    aead_open(&k, 0, empty, &h, &mut []).map_err(|_| HandshakeError::Decrypt)?;
    // (T_send, T_recv) = KDF2(C, ε) for the initiator.
    let (send, recv) = kdf2(&ck, &[]);
    Ok(TransportKeys { send, recv })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn both_sides_derive_mirrored_keys_with_and_without_psk() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let i = PrivateKey::generate(&mut rng);
        let r = PrivateKey::generate(&mut rng);
        let (ip, rp) = (i.public_key(), r.public_key());
        let ss = dh(i.secret(), rp.as_bytes()).expect("dh");
        for psk in [PresharedKey::default(), PresharedKey::from_bytes([9; 32])] {
            let (msg, st) = create_initiation(
                &ip,
                &rp,
                &initial_hash(&rp),
                &ss,
                11,
                Tai64N([1; 12]),
                &mut rng,
            );
            let got = consume_initiation(&r, &initial_hash(&rp), &msg).expect("consume init");
            assert_eq!(got.remote_static, ip);
            assert_eq!(got.remote_index, 11);
            assert_eq!(got.timestamp, Tai64N([1; 12]));
            let (resp, rkeys) = create_response(&got, &psk, 22, &mut rng).expect("resp");
            let ikeys = consume_response(&st, &i, &psk, &resp).expect("consume resp");
            assert_eq!(*ikeys.send, *rkeys.recv);
            assert_eq!(*ikeys.recv, *rkeys.send);
            assert_ne!(*ikeys.send, *ikeys.recv);
            // A mismatched PSK fails authentication of the empty payload.
            let wrong = PresharedKey::from_bytes([8; 32]);
            assert_eq!(
                consume_response(&st, &i, &wrong, &resp).err(),
                Some(HandshakeError::Decrypt)
            );
        }
    }

    #[test]
    fn initiation_for_someone_else_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let i = PrivateKey::generate(&mut rng);
        let r = PrivateKey::generate(&mut rng);
        let other = PrivateKey::generate(&mut rng);
        let (ip, rp) = (i.public_key(), r.public_key());
        let ss = dh(i.secret(), rp.as_bytes()).expect("dh");
        let (msg, _) = create_initiation(
            &ip,
            &rp,
            &initial_hash(&rp),
            &ss,
            1,
            Tai64N([0; 12]),
            &mut rng,
        );
        let op = other.public_key();
        assert_eq!(
            consume_initiation(&other, &initial_hash(&op), &msg).err(),
            Some(HandshakeError::Decrypt)
        );
        let mut tampered = msg;
        tampered[wire::INIT_TIMESTAMP] ^= 1;
        assert_eq!(
            consume_initiation(&r, &initial_hash(&rp), &tampered).err(),
            Some(HandshakeError::Decrypt)
        );
    }
}

//! The AUTH payload for pre-shared keys (RFC 7296 §2.15):
//! AUTH = prf(prf(PSK, "Key Pad for IKEv2"), SignedOctets), where
//! SignedOctets = our IKE_SA_INIT message | the peer's nonce |
//! prf(SK_p, our ID payload body).

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::Prf;

const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// prf(SK_px, IDType | RESERVED | ID data).
pub fn maced_id(prf: Prf, sk_p: &[u8], id_type: u8, id_data: &[u8]) -> Zeroizing<Vec<u8>> {
    prf.compute(sk_p, &[&[id_type, 0, 0, 0], id_data])
}

/// The AUTH data a side with `psk` sends (or expects from the peer, given
/// the peer's message, our nonce and the peer's MACed ID).
pub fn psk_auth(
    prf: Prf,
    psk: &[u8],
    init_message: &[u8],
    peer_nonce: &[u8],
    maced_id: &[u8],
) -> Zeroizing<Vec<u8>> {
    let key = prf.compute(psk, &[KEY_PAD]);
    prf.compute(&key, &[init_message, peer_nonce, maced_id])
}

/// Constant-time comparison of AUTH data.
pub fn auth_matches(got: &[u8], want: &[u8]) -> bool {
    got.len() == want.len() && bool::from(got.ct_eq(want))
}

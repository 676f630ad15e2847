//! The key schedule (RFC 7296 §2.14, §2.17, §2.18): SKEYSEED, the seven
//! IKE SA keys, and Child SA key material.

use zeroize::Zeroizing;

use super::Prf;

/// The keys of an IKE SA. `a` keys are empty with AEAD ciphers; `e` keys
/// include the AEAD salt.
pub struct IkeKeys {
    pub sk_d: Zeroizing<Vec<u8>>,
    pub sk_ai: Zeroizing<Vec<u8>>,
    pub sk_ar: Zeroizing<Vec<u8>>,
    pub sk_ei: Zeroizing<Vec<u8>>,
    pub sk_er: Zeroizing<Vec<u8>>,
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys { .. }") // never the keys
    }
}

/// Lengths of the pieces cut from prf+.
#[derive(Debug, Clone, Copy)]
pub struct KeyLengths {
    pub integ: usize,
    pub encr: usize,
}

impl IkeKeys {
    /// Keys of a new IKE SA from IKE_SA_INIT: SKEYSEED = prf(Ni | Nr,
    /// g^ir), then prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn initial(
        prf: Prf,
        lens: KeyLengths,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Option<Self> {
        let mut nonces = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
        nonces.extend_from_slice(ni);
        nonces.extend_from_slice(nr);
        let skeyseed = prf.compute(&nonces, &[g_ir]);
        Self::expand(prf, prf.output_len(), lens, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// Keys of an IKE SA that replaces one whose SK_d and PRF are given
    /// (RFC 7296 §2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
    /// As strongSwan does, the old SA's PRF also runs prf+; the pieces
    /// are cut to the new PRF's key size. (Both sides normally keep the
    /// same PRF, so the choice rarely matters; this one interoperates.)
    #[allow(clippy::too_many_arguments)]
    pub fn rekeyed(
        old_prf: Prf,
        old_sk_d: &[u8],
        new_prf: Prf,
        lens: KeyLengths,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Option<Self> {
        let skeyseed = old_prf.compute(old_sk_d, &[g_ir, ni, nr]);
        Self::expand(
            old_prf,
            new_prf.output_len(),
            lens,
            &skeyseed,
            ni,
            nr,
            spi_i,
            spi_r,
        )
    }

    /// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) cut into the seven keys; `p`
    /// is the size of SK_d, SK_pi and SK_pr.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        prf: Prf,
        p: usize,
        lens: KeyLengths,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Option<Self> {
        let total = 3 * p + 2 * lens.integ + 2 * lens.encr;
        let km = prf.plus(
            skeyseed,
            &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
            total,
        )?;
        let mut cut = Cutter { km: &km, at: 0 };
        Some(Self {
            sk_d: cut.next(p),
            sk_ai: cut.next(lens.integ),
            sk_ar: cut.next(lens.integ),
            sk_ei: cut.next(lens.encr),
            sk_er: cut.next(lens.encr),
            sk_pi: cut.next(p),
            sk_pr: cut.next(p),
        })
    }
}

/// Key material of a Child SA, per direction (RFC 7296 §2.17).
pub struct ChildKeys {
    /// Initiator to responder: encryption key material, integrity key.
    pub encr_i: Zeroizing<Vec<u8>>,
    pub integ_i: Zeroizing<Vec<u8>>,
    /// Responder to initiator.
    pub encr_r: Zeroizing<Vec<u8>>,
    pub integ_r: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys { .. }")
    }
}

impl ChildKeys {
    /// KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr).
    pub fn derive(
        prf: Prf,
        sk_d: &[u8],
        lens: KeyLengths,
        g_ir: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
    ) -> Option<Self> {
        let total = 2 * (lens.encr + lens.integ);
        let km = match g_ir {
            Some(g) => prf.plus(sk_d, &[g, ni, nr], total)?,
            None => prf.plus(sk_d, &[ni, nr], total)?,
        };
        let mut cut = Cutter { km: &km, at: 0 };
        Some(Self {
            encr_i: cut.next(lens.encr),
            integ_i: cut.next(lens.integ),
            encr_r: cut.next(lens.encr),
            integ_r: cut.next(lens.integ),
        })
    }
}

struct Cutter<'a> {
    km: &'a [u8],
    at: usize,
}

impl Cutter<'_> {
    fn next(&mut self, n: usize) -> Zeroizing<Vec<u8>> {
        let end = (self.at + n).min(self.km.len());
        let piece = Zeroizing::new(self.km[self.at..end].to_vec());
        self.at = end;
        piece
    }
}

//! Proposals: what we offer or accept, written as strongSwan writes them
//! ("aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"), turned
//! into SA payloads, and the choice of one suite from a peer's offer
//! (RFC 7296 §2.7, §3.3.6).

use proto_esp::Integ;
use thiserror::Error;

use crate::crypto::{integ_from_transform, integ_transform_id, DhGroup, Encr, Prf};
use crate::wire::consts::{protocol, transform as t};
use crate::wire::{Proposal, SaPayload, Transform};

/// An IKE proposal: any of each list (ours in order of preference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    pub encr: Vec<Encr>,
    pub integ: Vec<Integ>,
    pub prf: Vec<Prf>,
    pub dh: Vec<DhGroup>,
}

/// An ESP proposal. `dh` is for PFS in CREATE_CHILD_SA; the Child SA
/// made inside IKE_AUTH uses the IKE SA's exchange (RFC 7296 §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    pub encr: Vec<Encr>,
    pub integ: Vec<Integ>,
    pub esn: Vec<bool>,
    pub dh: Vec<DhGroup>,
}

/// The algorithms of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub prf: Prf,
    pub dh: DhGroup,
}

/// The algorithms of a Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub esn: bool,
    pub dh: Option<DhGroup>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalError {
    #[error("unknown algorithm {0:?} in proposal")]
    Unknown(String),
    #[error("proposal {0:?} lacks {1}")]
    Incomplete(String, &'static str),
}

enum Token {
    Encr(Encr),
    Integ(Integ),
    Prf(Prf),
    Dh(DhGroup),
    Esn(bool),
}

fn token(s: &str) -> Option<Token> {
    Some(match s {
        "aes128gcm16" | "aes128gcm" => Token::Encr(Encr::AesGcm16 { bits: 128 }),
        "aes256gcm16" | "aes256gcm" => Token::Encr(Encr::AesGcm16 { bits: 256 }),
        "chacha20poly1305" => Token::Encr(Encr::ChaCha20Poly1305),
        "aes128" => Token::Encr(Encr::AesCbc { bits: 128 }),
        "aes256" => Token::Encr(Encr::AesCbc { bits: 256 }),
        "sha256" | "sha2_256" => Token::Integ(Integ::HmacSha256),
        "sha384" | "sha2_384" => Token::Integ(Integ::HmacSha384),
        "sha512" | "sha2_512" => Token::Integ(Integ::HmacSha512),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "prfsha512" => Token::Prf(Prf::HmacSha512),
        "modp2048" => Token::Dh(DhGroup::Modp2048),
        "ecp256" => Token::Dh(DhGroup::Ecp256),
        "ecp384" => Token::Dh(DhGroup::Ecp384),
        "x25519" | "curve25519" => Token::Dh(DhGroup::Curve25519),
        "esn" => Token::Esn(true),
        "noesn" => Token::Esn(false),
        _ => return None,
    })
}

fn prf_for(integ: Integ) -> Prf {
    match integ {
        Integ::HmacSha256 => Prf::HmacSha256,
        Integ::HmacSha384 => Prf::HmacSha384,
        Integ::HmacSha512 => Prf::HmacSha512,
    }
}

fn push<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

impl IkeProposal {
    /// Parses a strongSwan-style IKE proposal. As in strongSwan, an
    /// integrity algorithm with no PRF given also names the PRF.
    pub fn parse(s: &str) -> Result<Self, ProposalError> {
        let mut p = Self {
            encr: vec![],
            integ: vec![],
            prf: vec![],
            dh: vec![],
        };
        for part in s.split('-') {
            match token(part).ok_or_else(|| ProposalError::Unknown(part.to_string()))? {
                Token::Encr(e) => push(&mut p.encr, e),
                Token::Integ(i) => push(&mut p.integ, i),
                Token::Prf(f) => push(&mut p.prf, f),
                Token::Dh(d) => push(&mut p.dh, d),
                Token::Esn(_) => return Err(ProposalError::Unknown(part.to_string())),
            }
        }
        if p.prf.is_empty() {
            p.prf = p.integ.iter().map(|&i| prf_for(i)).collect();
        }
        let incomplete = |what| Err(ProposalError::Incomplete(s.to_string(), what));
        if p.encr.is_empty() {
            return incomplete("an encryption algorithm");
        }
        if p.prf.is_empty() {
            return incomplete("a PRF");
        }
        if p.dh.is_empty() {
            return incomplete("a Diffie-Hellman group");
        }
        if p.encr.iter().any(|e| !e.is_aead()) && p.integ.is_empty() {
            return incomplete("an integrity algorithm for its CBC cipher");
        }
        Ok(p)
    }

    /// The proposal on the wire, numbered `number`.
    pub fn to_wire(&self, number: u8) -> Proposal {
        let mut transforms = cipher_transforms(&self.encr, &self.integ);
        for &f in &self.prf {
            transforms.push(Transform::new(t::PRF, f.transform_id()));
        }
        for &d in &self.dh {
            transforms.push(Transform::new(t::DH, d.id()));
        }
        Proposal {
            number,
            protocol: protocol::IKE,
            spi: vec![],
            transforms,
        }
    }
}

impl EspProposal {
    /// Parses a strongSwan-style ESP proposal ("aes256gcm16",
    /// "aes256-sha256-modp2048-esn"); without "esn", ESN is off.
    pub fn parse(s: &str) -> Result<Self, ProposalError> {
        let mut p = Self {
            encr: vec![],
            integ: vec![],
            esn: vec![],
            dh: vec![],
        };
        for part in s.split('-') {
            match token(part).ok_or_else(|| ProposalError::Unknown(part.to_string()))? {
                Token::Encr(e) => push(&mut p.encr, e),
                Token::Integ(i) => push(&mut p.integ, i),
                Token::Dh(d) => push(&mut p.dh, d),
                Token::Esn(e) => push(&mut p.esn, e),
                Token::Prf(_) => return Err(ProposalError::Unknown(part.to_string())),
            }
        }
        if p.esn.is_empty() {
            p.esn.push(false);
        }
        if p.encr.is_empty() {
            return Err(ProposalError::Incomplete(
                s.to_string(),
                "an encryption algorithm",
            ));
        }
        if p.encr.iter().any(|e| !e.is_aead()) && p.integ.is_empty() {
            return Err(ProposalError::Incomplete(
                s.to_string(),
                "an integrity algorithm for its CBC cipher",
            ));
        }
        Ok(p)
    }

    /// The proposal on the wire with our inbound SPI; `with_dh` adds the
    /// PFS groups (CREATE_CHILD_SA only).
    pub fn to_wire(&self, number: u8, spi: u32, with_dh: bool) -> Proposal {
        let mut transforms = cipher_transforms(&self.encr, &self.integ);
        if with_dh {
            for &d in &self.dh {
                transforms.push(Transform::new(t::DH, d.id()));
            }
        }
        for &e in &self.esn {
            transforms.push(Transform::new(
                t::ESN,
                if e { t::ESN_YES } else { t::ESN_NO },
            ));
        }
        Proposal {
            number,
            protocol: protocol::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }
}

/// ENCR transforms, then INTEG ones if any cipher needs them (AEAD-only
/// proposals carry none, RFC 5282 §8).
fn cipher_transforms(encr: &[Encr], integ: &[Integ]) -> Vec<Transform> {
    let mut transforms = encr_transforms(encr);
    if encr.iter().any(|e| !e.is_aead()) {
        for &i in integ {
            transforms.push(Transform::new(t::INTEG, integ_transform_id(i)));
        }
    }
    transforms
}

fn encr_transforms(encr: &[Encr]) -> Vec<Transform> {
    encr.iter()
        .map(|e| {
            let (id, bits) = e.transform_id();
            match bits {
                Some(b) => Transform::with_key_len(t::ENCR, id, b),
                None => Transform::new(t::ENCR, id),
            }
        })
        .collect()
}

/// An SA payload offering `proposals`.
pub fn ike_sa_payload(proposals: &[IkeProposal]) -> SaPayload {
    SaPayload {
        proposals: proposals
            .iter()
            .zip(1u8..)
            .map(|(p, n)| p.to_wire(n))
            .collect(),
    }
}

/// The first transform of `kind` in a peer's proposal that `accept` maps
/// to something we allow, in the peer's order of preference.
fn pick<T>(p: &Proposal, kind: u8, accept: impl Fn(&Transform) -> Option<T>) -> Option<T> {
    p.transforms
        .iter()
        .filter(|tr| tr.kind == kind && !tr.unknown_attribute)
        .find_map(accept)
}

fn has(p: &Proposal, kind: u8) -> bool {
    p.transforms.iter().any(|tr| tr.kind == kind)
}

/// Chooses an IKE suite from a peer's offer (the peer's order of
/// preference first); returns the peer's proposal number too.
pub fn choose_ike(offer: &SaPayload, ours: &[IkeProposal]) -> Option<(u8, IkeSuite)> {
    for p in offer
        .proposals
        .iter()
        .filter(|p| p.protocol == protocol::IKE)
    {
        for mine in ours {
            if let Some(s) = match_ike(p, mine) {
                return Some((p.number, s));
            }
        }
    }
    None
}

fn match_ike(p: &Proposal, mine: &IkeProposal) -> Option<IkeSuite> {
    let encr = pick(p, t::ENCR, |tr| {
        Encr::from_transform(tr.id, tr.key_len).filter(|e| mine.encr.contains(e))
    })?;
    let integ = if encr.is_aead() {
        // RFC 5282 §8: an AEAD proposal carries no integrity transform
        // (or NONE); one that mixes them is not one we can honour.
        if p.transforms
            .iter()
            .any(|tr| tr.kind == t::INTEG && tr.id != 0)
        {
            return None;
        }
        None
    } else {
        Some(pick(p, t::INTEG, |tr| {
            integ_from_transform(tr.id).filter(|i| mine.integ.contains(i))
        })?)
    };
    let prf = pick(p, t::PRF, |tr| {
        Prf::from_transform(tr.id).filter(|f| mine.prf.contains(f))
    })?;
    let dh = pick(p, t::DH, |tr| {
        DhGroup::from_id(tr.id).filter(|d| mine.dh.contains(d))
    })?;
    Some(IkeSuite {
        encr,
        integ,
        prf,
        dh,
    })
}

/// Which exchange a Child SA is negotiated in: its keys come from the IKE
/// SA's in IKE_AUTH (no key exchange is possible there), while in
/// CREATE_CHILD_SA a proposal of ours that names a DH group requires one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExchange {
    IkeAuth,
    /// With the group of the peer's KE payload, if it sent one.
    CreateChildSa(Option<DhGroup>),
}

/// Chooses an ESP suite; returns the peer's proposal number, the peer's
/// SPI and the suite. In CREATE_CHILD_SA, in order of preference: a
/// proposal with PFS in the group of the peer's KE; a proposal without a
/// DH group when our policy asks for no PFS (a KE is then ignored, as
/// strongSwan's mixed offers expect); else a suite naming another group we
/// accept, for the caller to answer INVALID_KE_PAYLOAD with. Without a KE
/// only our proposals without PFS can match: a policy that requires PFS
/// is never given up on the peer's say (NO_PROPOSAL_CHOSEN then).
pub fn choose_esp(
    offer: &SaPayload,
    ours: &[EspProposal],
    exchange: ChildExchange,
) -> Option<(u8, u32, EspSuite)> {
    let (ke, pfs_possible) = match exchange {
        ChildExchange::IkeAuth => (None, false),
        ChildExchange::CreateChildSa(ke) => (ke, true),
    };
    let mut without_pfs = None;
    let mut other_group = None;
    for p in offer
        .proposals
        .iter()
        .filter(|p| p.protocol == protocol::ESP)
    {
        let Ok(spi) = <[u8; 4]>::try_from(&p.spi[..]) else {
            continue;
        };
        let spi = u32::from_be_bytes(spi);
        let offers_dh = p.transforms.iter().any(|tr| tr.kind == t::DH && tr.id != 0);
        for mine in ours {
            let Some(g) = ke else {
                if pfs_possible && !mine.dh.is_empty() {
                    continue; // PFS required, no key exchange offered
                }
                if let Some(s) = match_esp(p, mine, false) {
                    return Some((p.number, spi, s));
                }
                continue;
            };
            if !offers_dh {
                if mine.dh.is_empty() && without_pfs.is_none() {
                    without_pfs = match_esp(p, mine, false).map(|s| (p.number, spi, s));
                }
                continue;
            }
            let Some(mut s) = match_esp(p, mine, true) else {
                continue;
            };
            let offered = p
                .transforms
                .iter()
                .any(|tr| tr.kind == t::DH && tr.id == g.id());
            if offered && mine.dh.contains(&g) {
                s.dh = Some(g);
                return Some((p.number, spi, s));
            }
            other_group = other_group.or(Some((p.number, spi, s)));
        }
    }
    without_pfs.or(other_group)
}

fn match_esp(p: &Proposal, mine: &EspProposal, want_dh: bool) -> Option<EspSuite> {
    let encr = pick(p, t::ENCR, |tr| {
        Encr::from_transform(tr.id, tr.key_len).filter(|e| mine.encr.contains(e))
    })?;
    let integ = if encr.is_aead() {
        None
    } else {
        Some(pick(p, t::INTEG, |tr| {
            integ_from_transform(tr.id).filter(|i| mine.integ.contains(i))
        })?)
    };
    let esn = if has(p, t::ESN) {
        pick(p, t::ESN, |tr| {
            match tr.id {
                t::ESN_NO => Some(false),
                t::ESN_YES => Some(true),
                _ => None,
            }
            .filter(|e| mine.esn.contains(e))
        })?
    } else {
        false
    };
    let dh = if want_dh {
        Some(pick(p, t::DH, |tr| {
            DhGroup::from_id(tr.id).filter(|d| mine.dh.contains(d))
        })?)
    } else {
        None
    };
    Some(EspSuite {
        encr,
        integ,
        esn,
        dh,
    })
}

/// The one-proposal SA payload a responder answers with.
pub fn ike_answer(number: u8, s: &IkeSuite, spi: Vec<u8>) -> SaPayload {
    let mut transforms = encr_transforms(&[s.encr]);
    if let Some(i) = s.integ {
        transforms.push(Transform::new(t::INTEG, integ_transform_id(i)));
    }
    transforms.push(Transform::new(t::PRF, s.prf.transform_id()));
    transforms.push(Transform::new(t::DH, s.dh.id()));
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: protocol::IKE,
            spi,
            transforms,
        }],
    }
}

pub fn esp_answer(number: u8, s: &EspSuite, spi: u32) -> SaPayload {
    let mut transforms = encr_transforms(&[s.encr]);
    if let Some(i) = s.integ {
        transforms.push(Transform::new(t::INTEG, integ_transform_id(i)));
    }
    if let Some(d) = s.dh {
        transforms.push(Transform::new(t::DH, d.id()));
    }
    transforms.push(Transform::new(
        t::ESN,
        if s.esn { t::ESN_YES } else { t::ESN_NO },
    ));
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: protocol::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }],
    }
}

/// Checks a responder's answer against what we offered: exactly one
/// proposal, and each transform one we offered.
pub fn accept_ike_answer(answer: &SaPayload, ours: &[IkeProposal]) -> Option<IkeSuite> {
    let [p] = &answer.proposals[..] else {
        return None;
    };
    let mine = ours.get(usize::from(p.number).checked_sub(1)?)?;
    let s = match_ike(p, mine)?;
    // One transform of each type, no more (RFC 7296 §3.3.6).
    let count = |k| p.transforms.iter().filter(|tr| tr.kind == k).count();
    (count(t::ENCR) == 1 && count(t::PRF) == 1 && count(t::DH) == 1 && count(t::INTEG) <= 1)
        .then_some(s)
}

pub fn accept_esp_answer(
    answer: &SaPayload,
    ours: &[EspProposal],
    want_dh: bool,
) -> Option<(u32, EspSuite)> {
    let [p] = &answer.proposals[..] else {
        return None;
    };
    let mine = ours.get(usize::from(p.number).checked_sub(1)?)?;
    let spi = u32::from_be_bytes(<[u8; 4]>::try_from(&p.spi[..]).ok()?);
    let s = match_esp(p, mine, want_dh)?;
    let count = |k| p.transforms.iter().filter(|tr| tr.kind == k).count();
    (count(t::ENCR) == 1 && count(t::INTEG) <= 1 && count(t::ESN) <= 1 && count(t::DH) <= 1)
        .then_some((spi, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongswan_strings() {
        let p = IkeProposal::parse("aes256gcm16-prfsha256-ecp256").unwrap();
        assert_eq!(p.encr, vec![Encr::AesGcm16 { bits: 256 }]);
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert_eq!(p.dh, vec![DhGroup::Ecp256]);
        let p = IkeProposal::parse("aes256-sha256-modp2048").unwrap();
        assert_eq!(p.integ, vec![Integ::HmacSha256]);
        assert_eq!(
            p.prf,
            vec![Prf::HmacSha256],
            "PRF follows the integrity algorithm"
        );
        assert!(
            IkeProposal::parse("aes256-prfsha256-ecp256").is_err(),
            "CBC without integrity"
        );
        assert!(
            IkeProposal::parse("aes256gcm16-prfsha256").is_err(),
            "no DH group"
        );
        assert!(IkeProposal::parse("3des-md5-modp1024").is_err());
        let e = EspProposal::parse("aes256-sha384-esn").unwrap();
        assert_eq!(e.esn, vec![true]);
        assert_eq!(
            EspProposal::parse("chacha20poly1305").unwrap().esn,
            vec![false]
        );
    }

    #[test]
    fn a_responder_picks_the_first_acceptable_proposal_and_the_initiator_checks_it() {
        let offer_list = [
            IkeProposal::parse("aes128-sha256-modp2048").unwrap(),
            IkeProposal::parse("aes256gcm16-aes128gcm16-prfsha384-prfsha256-ecp384-ecp256")
                .unwrap(),
        ];
        let offer = ike_sa_payload(&offer_list);
        let ours = [IkeProposal::parse("aes128gcm16-prfsha256-ecp256").unwrap()];
        let (n, s) = choose_ike(&offer, &ours).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            s,
            IkeSuite {
                encr: Encr::AesGcm16 { bits: 128 },
                integ: None,
                prf: Prf::HmacSha256,
                dh: DhGroup::Ecp256
            }
        );
        let answer = ike_answer(n, &s, vec![]);
        assert_eq!(accept_ike_answer(&answer, &offer_list), Some(s));
        // An answer naming something we never offered is refused.
        let bad = ike_answer(1, &s, vec![]);
        assert_eq!(accept_ike_answer(&bad, &offer_list), None);
        // Nothing in common.
        let other = [IkeProposal::parse("chacha20poly1305-prfsha512-x25519").unwrap()];
        assert!(choose_ike(&offer, &other).is_none());
    }

    #[test]
    fn esp_choice_carries_the_peer_spi_and_esn() {
        let mine = [EspProposal::parse("aes256-sha256-esn-noesn").unwrap()];
        let offer = SaPayload {
            proposals: vec![mine[0].to_wire(1, 0xc0ffee01, false)],
        };
        let (n, spi, s) = choose_esp(&offer, &mine, ChildExchange::IkeAuth).unwrap();
        assert_eq!((n, spi), (1, 0xc0ffee01));
        assert!(s.esn);
        assert_eq!(s.integ, Some(Integ::HmacSha256));
        let answer = esp_answer(n, &s, 0x11223344);
        assert_eq!(
            accept_esp_answer(&answer, &mine, false),
            Some((0x11223344, s))
        );
    }

    /// strongSwan offers the same ciphers with and without a DH group and
    /// sends a KE for its first group.
    #[test]
    fn pfs_is_chosen_by_our_policy_from_a_mixed_offer() {
        let peer: Vec<EspProposal> = ["aes256gcm16", "aes256gcm16-ecp256", "aes256gcm16-x25519"]
            .iter()
            .map(|p| EspProposal::parse(p).unwrap())
            .collect();
        let offer = SaPayload {
            proposals: peer
                .iter()
                .zip(1u8..)
                .map(|(p, n)| p.to_wire(n, 0x01020304, true))
                .collect(),
        };
        let ke = Some(DhGroup::Ecp256);
        let choose = |ours: &str| {
            let ours = [EspProposal::parse(ours).unwrap()];
            choose_esp(&offer, &ours, ChildExchange::CreateChildSa(ke)).map(|(n, _, s)| (n, s.dh))
        };
        assert_eq!(
            choose("aes256gcm16"),
            Some((1, None)),
            "no PFS wanted: KE ignored"
        );
        assert_eq!(
            choose("aes256gcm16-ecp256"),
            Some((2, Some(DhGroup::Ecp256)))
        );
        assert_eq!(
            choose("aes256gcm16-x25519"),
            Some((3, Some(DhGroup::Curve25519))),
            "another group we take: INVALID_KE_PAYLOAD follows"
        );
        assert_eq!(choose("aes256gcm16-ecp384"), None);
        assert_eq!(choose("chacha20poly1305"), None);
    }

    /// A rekey without a key exchange against a policy that requires PFS
    /// (strongSwan does exactly this when its proposals name no group).
    #[test]
    fn required_pfs_is_not_given_up_on_the_peers_say() {
        let no_pfs = EspProposal::parse("aes256gcm16").unwrap();
        let offer = SaPayload {
            proposals: vec![no_pfs.to_wire(1, 0x0a0b0c0d, false)],
        };
        let ours = [EspProposal::parse("aes256gcm16-ecp256").unwrap()];
        assert!(
            choose_esp(&offer, &ours, ChildExchange::CreateChildSa(None)).is_none(),
            "a rekey without KE was accepted under required PFS"
        );
        // In IKE_AUTH there is no key exchange to require.
        assert!(choose_esp(&offer, &ours, ChildExchange::IkeAuth).is_some());
        // A policy that allows either keeps working without KE.
        let either = [
            EspProposal::parse("aes256gcm16-ecp256").unwrap(),
            EspProposal::parse("aes256gcm16").unwrap(),
        ];
        assert!(choose_esp(&offer, &either, ChildExchange::CreateChildSa(None)).is_some());
    }
}

//! A stateless Binding server (RFC 8489 §6.3): each request is answered on
//! its own, from the request alone.
//!
//! No reflection amplification: an answer is never larger than the request
//! plus the XOR-MAPPED-ADDRESS it adds. Success carries only
//! XOR-MAPPED-ADDRESS (and FINGERPRINT when the request had one); errors
//! carry ERROR-CODE with an empty reason phrase (and UNKNOWN-ATTRIBUTES,
//! never longer than the attributes it names).

use std::net::SocketAddr;

use crate::wire::{Class, Message, MessageBuilder, StunError, HEADER_LEN, METHOD_BINDING};

/// What the server decided about a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Send `out[..len]` back to the source.
    Reply(usize),
    /// Not for us, or must not be answered (indications, responses,
    /// unparseable bytes, a failed FINGERPRINT).
    Ignore,
}

/// Bytes XOR-MAPPED-ADDRESS adds for an IPv4 / IPv6 source.
pub fn xor_mapped_address_len(from: SocketAddr) -> usize {
    if from.is_ipv4() {
        12
    } else {
        24
    }
}

/// Answers one datagram from `from`, writing the response into `out`.
pub fn answer(request: &[u8], from: SocketAddr, out: &mut [u8]) -> Answer {
    match answer_inner(request, from, out) {
        Ok(n) => {
            debug_assert!(n <= request.len() + xor_mapped_address_len(from));
            Answer::Reply(n)
        }
        Err(_) => Answer::Ignore,
    }
}

fn answer_inner(request: &[u8], from: SocketAddr, out: &mut [u8]) -> Result<usize, StunError> {
    if request.len() < HEADER_LEN {
        return Err(StunError::NotStun);
    }
    let budget = request.len() + xor_mapped_address_len(from);
    let out = out
        .get_mut(..budget.min(out.len()))
        .ok_or(StunError::BufferTooSmall)?;
    if is_rfc3489_binding_request(request) {
        return classic_binding_response(request, from, out);
    }
    if !is_stun_header(request) {
        return Err(StunError::NotStun);
    }
    let msg = match Message::parse(request) {
        Ok(m) => m,
        // The header is STUN but the body is broken: 400, if it was a request.
        Err(_) => return bad_request(request, out),
    };
    if msg.class() != Class::Request || msg.method() != METHOD_BINDING {
        // Unknown methods would deserve 400 in a full server; a binding-only
        // server stays silent rather than talk to scanners.
        return Err(StunError::NotStun);
    }
    let fingerprinted = msg.has_fingerprint();
    if fingerprinted && msg.check_fingerprint().is_err() {
        return Err(StunError::BadFingerprint);
    }
    let id = msg.transaction_id();
    if msg.unknown_required().next().is_some() {
        let mut b = MessageBuilder::new(out, Class::ErrorResponse, METHOD_BINDING, id)?;
        b.error_code(420, "")?;
        b.unknown_attributes(msg.unknown_required())?;
        return Ok(b.finish());
    }
    let mut b = MessageBuilder::new(out, Class::SuccessResponse, METHOD_BINDING, id)?;
    b.xor_mapped_address(from)?;
    if fingerprinted {
        b.fingerprint()?;
    }
    Ok(b.finish())
}

/// The header looks like a STUN request of ours even if the body does not
/// parse: enough to answer 400 with its transaction id.
fn is_stun_header(b: &[u8]) -> bool {
    b[0] & 0xc0 == 0 && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == crate::wire::MAGIC_COOKIE
}

fn bad_request(request: &[u8], out: &mut [u8]) -> Result<usize, StunError> {
    let kind = u16::from_be_bytes([request[0], request[1]]);
    // Only a Binding request (class bits zero) gets a 400.
    if kind != 0x0001 {
        return Err(StunError::NotStun);
    }
    let mut id = [0u8; 12];
    id.copy_from_slice(&request[8..20]);
    let mut b = MessageBuilder::new(
        out,
        Class::ErrorResponse,
        METHOD_BINDING,
        crate::wire::TransactionId(id),
    )?;
    b.error_code(400, "")?;
    Ok(b.finish())
}

/// An RFC 3489 ("classic STUN") Binding request: no magic cookie, the
/// whole 128 bits after the length are the transaction id. RFC 5389 §12.2
/// asks servers to keep answering these (old clients such as Debian's
/// `stun` still send them).
fn is_rfc3489_binding_request(b: &[u8]) -> bool {
    let length = usize::from(u16::from_be_bytes([b[2], b[3]]));
    b[..2] == [0x00, 0x01]
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != crate::wire::MAGIC_COOKIE
        && length + HEADER_LEN == b.len()
        && length % 4 == 0
}

/// The classic answer: Binding success echoing the 128-bit transaction id,
/// with MAPPED-ADDRESS (no XOR: RFC 3489 predates it). Attributes such as
/// CHANGE-REQUEST are ignored: this server has one address and port.
fn classic_binding_response(
    request: &[u8],
    from: SocketAddr,
    out: &mut [u8],
) -> Result<usize, StunError> {
    let mut b = MessageBuilder::new(
        out,
        Class::SuccessResponse,
        METHOD_BINDING,
        crate::wire::TransactionId::default(),
    )?;
    b.mapped_address(from)?;
    let n = b.finish();
    // The builder wrote the magic cookie; RFC 3489's id spans those bytes.
    out[4..20].copy_from_slice(&request[4..20]);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TransactionId, ATTR_SOFTWARE};

    fn request(extra: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Request,
            METHOD_BINDING,
            TransactionId([7; 12]),
        )
        .expect("b");
        extra(&mut b);
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn binding_success_carries_the_reflexive_address_both_families() {
        for from in ["192.0.2.1:32853", "[2001:db8::1]:9"] {
            let from: SocketAddr = from.parse().expect("addr");
            let req = request(|b| {
                b.fingerprint().expect("fp");
            });
            let mut out = [0u8; 256];
            let Answer::Reply(n) = answer(&req, from, &mut out) else {
                panic!("no reply")
            };
            let resp = Message::parse(&out[..n]).expect("parse");
            assert_eq!(resp.class(), Class::SuccessResponse);
            assert_eq!(resp.transaction_id(), TransactionId([7; 12]));
            assert_eq!(resp.xor_mapped_address().expect("xma"), Some(from));
            resp.check_fingerprint().expect("fingerprint");
            assert!(
                n <= req.len() + xor_mapped_address_len(from),
                "no amplification"
            );
        }
    }

    #[test]
    fn unknown_required_attribute_gets_420_listing_it() {
        let req = request(|b| {
            b.attribute(0x7777, b"?").expect("attr");
            b.attribute(ATTR_SOFTWARE, b"optional is fine")
                .expect("attr");
        });
        let mut out = [0u8; 256];
        let Answer::Reply(n) = answer(&req, "10.0.0.1:1".parse().expect("addr"), &mut out) else {
            panic!()
        };
        let resp = Message::parse(&out[..n]).expect("parse");
        assert_eq!(resp.class(), Class::ErrorResponse);
        assert_eq!(resp.error_code().expect("ec"), Some((420, "")));
        let unknown: Vec<u16> = resp
            .unknown_attributes()
            .expect("ua")
            .expect("present")
            .collect();
        assert_eq!(unknown, vec![0x7777]);
        assert!(n <= req.len() + 12);
    }

    #[test]
    fn classic_rfc3489_request_gets_mapped_address_and_its_own_id() {
        let mut req = vec![0u8; 28];
        req[..2].copy_from_slice(&[0, 1]);
        req[2..4].copy_from_slice(&8u16.to_be_bytes());
        req[4..20].copy_from_slice(&[0x5a; 16]); // 128-bit id, no cookie
        req[20..28].copy_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]); // CHANGE-REQUEST
        let from: SocketAddr = "198.51.100.4:5000".parse().expect("addr");
        let mut out = [0u8; 64];
        let Answer::Reply(n) = answer(&req, from, &mut out) else {
            panic!("no reply")
        };
        assert_eq!(&out[..2], &[0x01, 0x01]);
        assert_eq!(&out[4..20], &[0x5a; 16], "id echoed");
        assert_eq!(
            &out[20..32],
            &[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x13, 0x88, 198, 51, 100, 4]
        );
        assert!(n <= req.len() + 12);
    }

    #[test]
    fn broken_body_gets_400_and_other_things_get_silence() {
        let from: SocketAddr = "10.0.0.1:1".parse().expect("addr");
        let mut out = [0u8; 256];
        // Header says 8 bytes of attributes, the attribute claims 200.
        let mut req = request(|b| {
            b.attribute(ATTR_SOFTWARE, b"abcd").expect("attr");
        });
        req[22..24].copy_from_slice(&200u16.to_be_bytes());
        let Answer::Reply(n) = answer(&req, from, &mut out) else {
            panic!("400 expected")
        };
        assert_eq!(
            Message::parse(&out[..n])
                .expect("parse")
                .error_code()
                .expect("ec"),
            Some((400, ""))
        );
        assert!(n <= req.len() + 12);
        // A bad fingerprint, a response, an indication, garbage: no answer.
        let mut fp = request(|b| {
            b.fingerprint().expect("fp");
        });
        let last = fp.len() - 1;
        fp[last] ^= 1;
        assert_eq!(answer(&fp, from, &mut out), Answer::Ignore);
        let mut resp = request(|_| {});
        resp[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(answer(&resp, from, &mut out), Answer::Ignore);
        let mut ind = request(|_| {});
        ind[0..2].copy_from_slice(&0x0011u16.to_be_bytes());
        assert_eq!(answer(&ind, from, &mut out), Answer::Ignore);
        assert_eq!(answer(&[0x45; 60], from, &mut out), Answer::Ignore);
        assert_eq!(answer(&[], from, &mut out), Answer::Ignore);
    }
}

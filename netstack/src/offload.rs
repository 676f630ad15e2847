//! TUN offloads (virtio-net header): with TSO on, the kernel hands us one
//! TCP "super-packet" of up to 64 KB instead of ~45 MTU-sized ones, and
//! leaves checksums to us. This module turns such a read back into
//! ordinary IP packets, each with correct IP and TCP checksums.
//! Pure byte manipulation: no `unsafe`, no IO.

/// `struct virtio_net_hdr` without `num_buffers`: what TUN prepends.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Smallest segment size we accept; anything smaller is a malformed header
/// that would make us emit thousands of packets from one read.
const MIN_GSO_SIZE: usize = 64;

/// The virtio-net header, in host byte order as TUN uses it on x86/ARM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a TUN read could not be turned into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    Truncated,
    Unsupported(u8),
    BadHeader,
    /// More segments than the caller gave slots for.
    TooManySegments,
    /// A slot is too small for its packet (caller's sizing).
    NoRoom,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Result<Self, OffloadError> {
        let b: &[u8; VNET_HDR_LEN] = b
            .get(..VNET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(OffloadError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Segments needed for a packet of `len` bytes under this header.
    pub fn segments(&self, len: usize) -> usize {
        match self.gso_type & !GSO_ECN {
            GSO_TCPV4 | GSO_TCPV6 if self.gso_size > 0 => len
                .saturating_sub(usize::from(self.hdr_len))
                .div_ceil(usize::from(self.gso_size))
                .max(1),
            _ => 1,
        }
    }
}

/// Ones-complement sum of `data` added to `sum` (RFC 1071), not folded.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Internet checksum of `data` (0 when `data` already holds a valid one).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Completes a `NEEDS_CSUM` packet: the kernel left the pseudo-header sum
/// in the checksum field; the checksum covers `pkt[start..]`.
pub fn finish_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start.checked_add(offset).ok_or(OffloadError::BadHeader)?;
    if at + 2 > pkt.len() || start > pkt.len() {
        return Err(OffloadError::BadHeader);
    }
    let c = checksum(&pkt[start..]);
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// TCP checksum of `segment` (IP header + TCP header + payload) with the
/// TCP header at `l4`.
fn tcp_checksum(segment: &mut [u8], l4: usize, v4: bool) {
    segment[l4 + 16..l4 + 18].fill(0);
    let tcp_len = segment.len() - l4;
    let mut acc = if v4 {
        sum(0, &segment[12..20])
    } else {
        sum(0, &segment[8..40])
    };
    acc += 6 + tcp_len as u32;
    let c = !fold(sum(acc, &segment[l4..]));
    segment[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// Turns one TUN read (virtio header + packet) into IP packets. Packet `i`
/// is written to `out[i][head..]` and its length to `lens[i]`. Returns the
/// number of packets. Slots must hold `head` + the packet (+ any tail room
/// the caller needs, not touched here).
pub fn split(
    read: &[u8],
    out: &mut [Vec<u8>],
    head: usize,
    lens: &mut [usize],
) -> Result<usize, OffloadError> {
    let hdr = VnetHdr::parse(read)?;
    let pkt = &read[VNET_HDR_LEN..];
    let max = out.len().min(lens.len());
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let slot = out.first_mut().ok_or(OffloadError::TooManySegments)?;
            let dst = slot
                .get_mut(head..head + pkt.len())
                .ok_or(OffloadError::NoRoom)?;
            dst.copy_from_slice(pkt);
            if hdr.flags & F_NEEDS_CSUM != 0 {
                finish_checksum(
                    dst,
                    usize::from(hdr.csum_start),
                    usize::from(hdr.csum_offset),
                )?;
            }
            lens[0] = pkt.len();
            Ok(1)
        }
        kind @ (GSO_TCPV4 | GSO_TCPV6) => {
            tso_split(pkt, &hdr, kind == GSO_TCPV4, &mut out[..max], head, lens)
        }
        other => Err(OffloadError::Unsupported(other)),
    }
}

fn tso_split(
    pkt: &[u8],
    hdr: &VnetHdr,
    v4: bool,
    out: &mut [Vec<u8>],
    head: usize,
    lens: &mut [usize],
) -> Result<usize, OffloadError> {
    // The TCP header starts where the checksum does; its length is in the
    // data offset field. (hdr_len is only a hint some kernels round up.)
    let l4 = usize::from(hdr.csum_start);
    let min_l3 = if v4 { 20 } else { 40 };
    if l4 < min_l3 || l4 + 20 > pkt.len() || (pkt[0] >> 4) != if v4 { 4 } else { 6 } {
        return Err(OffloadError::BadHeader);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if v4 && !(20..=l4).contains(&ihl) {
        return Err(OffloadError::BadHeader);
    }
    let headers = l4 + usize::from(pkt[l4 + 12] >> 4) * 4;
    let mss = usize::from(hdr.gso_size);
    if headers > pkt.len() || mss < MIN_GSO_SIZE {
        return Err(OffloadError::BadHeader);
    }
    let payload = &pkt[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    if count > out.len() {
        return Err(OffloadError::TooManySegments);
    }
    let seq0 = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags0 = pkt[l4 + 13];
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = headers + chunk.len();
        let seg = out[i]
            .get_mut(head..head + len)
            .ok_or(OffloadError::NoRoom)?;
        seg[..headers].copy_from_slice(&pkt[..headers]);
        seg[headers..].copy_from_slice(chunk);
        if v4 {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].fill(0);
            let c = checksum(&seg[..ihl]);
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[l4 + 13] = flags;
        tcp_checksum(seg, l4, v4);
        lens[i] = len;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 super-packet as TSO hands it over: pseudo-header sum in
    /// the checksum field, total length of the whole thing.
    fn super_packet_v4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload.len()];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()).min(65535) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_ff00u32.to_be_bytes()); // wraps
        p[32] = 5 << 4;
        p[33] = flags;
        p[40..].copy_from_slice(payload);
        p
    }

    fn super_packet_v6(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 60 + payload.len()];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[23] = 1;
        p[39] = 2;
        p[40 + 12] = 5 << 4;
        p[40 + 13] = 0x18;
        p[60..].copy_from_slice(payload);
        p
    }

    fn read_with(hdr: VnetHdr, pkt: &[u8]) -> Vec<u8> {
        let mut r = vec![hdr.flags, hdr.gso_type];
        for v in [hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(pkt);
        r
    }

    fn slots(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| vec![0u8; 2048]).collect()
    }

    #[test]
    fn tso_v4_segments_carry_the_stream_with_valid_checksums() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let pkt = super_packet_v4(&payload, 0x18 | TCP_CWR | TCP_FIN);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1380,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut out = slots(16);
        let mut lens = [0usize; 16];
        let n = split(&read_with(hdr, &pkt), &mut out, 16, &mut lens).expect("split");
        assert_eq!(n, 8, "10,000 bytes at 1380 per segment");
        assert_eq!(hdr.segments(pkt.len()), 8);
        let mut stream = Vec::new();
        for i in 0..n {
            let seg = &out[i][16..16 + lens[i]];
            assert_eq!(
                checksum(&seg[..20]),
                0,
                "IPv4 header checksum of segment {i}"
            );
            let mut pseudo = seg[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&((seg.len() - 20) as u16).to_be_bytes());
            pseudo.extend_from_slice(&seg[20..]);
            assert_eq!(checksum(&pseudo), 0, "TCP checksum of segment {i}");
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), seg.len());
            assert_eq!(
                u16::from_be_bytes([seg[4], seg[5]]),
                0xfff0u16.wrapping_add(i as u16)
            );
            let seq = u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add((i * 1380) as u32));
            let flags = seg[33];
            assert_eq!(flags & TCP_FIN != 0, i == n - 1, "FIN only on the last");
            assert_eq!(flags & TCP_PSH != 0, i == n - 1, "PSH only on the last");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
            stream.extend_from_slice(&seg[40..]);
        }
        assert_eq!(stream, payload);
    }

    #[test]
    fn tso_v6_segments_have_valid_checksums_and_lengths() {
        let payload = vec![0xabu8; 3000];
        let pkt = super_packet_v6(&payload);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 60,
            gso_size: 1360,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut out = slots(4);
        let mut lens = [0usize; 4];
        let n = split(&read_with(hdr, &pkt), &mut out, 0, &mut lens).expect("split");
        assert_eq!(n, 3);
        for i in 0..n {
            let seg = &out[i][..lens[i]];
            assert_eq!(
                usize::from(u16::from_be_bytes([seg[4], seg[5]])) + 40,
                seg.len()
            );
            let mut pseudo = seg[8..40].to_vec();
            pseudo.extend_from_slice(&((seg.len() - 40) as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            pseudo.extend_from_slice(&seg[40..]);
            assert_eq!(checksum(&pseudo), 0, "segment {i}");
        }
        assert_eq!(lens[2], 60 + 3000 - 2 * 1360);
    }

    #[test]
    fn needs_csum_without_gso_completes_the_checksum() {
        // UDP/IPv4 with the pseudo-header sum in place, as the kernel leaves it.
        let mut pkt = vec![0u8; 28 + 5];
        pkt[0] = 0x45;
        pkt[9] = 17;
        pkt[12..16].copy_from_slice(&[10, 0, 0, 1]);
        pkt[16..20].copy_from_slice(&[10, 0, 0, 2]);
        pkt[24..26].copy_from_slice(&13u16.to_be_bytes());
        pkt[28..].copy_from_slice(b"hello");
        let pseudo = fold(sum(sum(0, &pkt[12..20]), &[0, 17, 0, 13]));
        pkt[26..28].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let mut out = slots(1);
        let mut lens = [0usize; 1];
        assert_eq!(split(&read_with(hdr, &pkt), &mut out, 0, &mut lens), Ok(1));
        let seg = &out[0][..lens[0]];
        let mut check = seg[12..20].to_vec();
        check.extend_from_slice(&[0, 17, 0, 13]);
        check.extend_from_slice(&seg[20..]);
        assert_eq!(checksum(&check), 0);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let mut out = slots(4);
        let mut lens = [0usize; 4];
        assert_eq!(
            split(&[0; 5], &mut out, 0, &mut lens),
            Err(OffloadError::Truncated)
        );
        let pkt = super_packet_v4(&[1; 5000], 0x10);
        let tiny = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 8,
            csum_start: 20,
            ..VnetHdr::default()
        };
        assert_eq!(
            split(&read_with(tiny, &pkt), &mut out, 0, &mut lens),
            Err(OffloadError::BadHeader)
        );
        let too_many = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            csum_start: 20,
            ..VnetHdr::default()
        };
        assert_eq!(
            split(&read_with(too_many, &pkt), &mut out, 0, &mut lens),
            Err(OffloadError::TooManySegments)
        );
        let bad_l4 = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            csum_start: 9000,
            ..VnetHdr::default()
        };
        assert_eq!(
            split(&read_with(bad_l4, &pkt), &mut out, 0, &mut lens),
            Err(OffloadError::BadHeader)
        );
        let udp = VnetHdr {
            gso_type: 3,
            ..VnetHdr::default()
        };
        assert_eq!(
            split(&read_with(udp, &pkt), &mut out, 0, &mut lens),
            Err(OffloadError::Unsupported(3))
        );
        let small = super_packet_v4(&[1; 100], 0x10);
        let csum = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60000,
            ..VnetHdr::default()
        };
        assert_eq!(
            split(&read_with(csum, &small), &mut out, 0, &mut lens),
            Err(OffloadError::BadHeader)
        );
        assert_eq!(
            split(&read_with(VnetHdr::default(), &pkt), &mut out, 0, &mut lens),
            Err(OffloadError::NoRoom)
        );
        // Any bytes at all: never a panic.
        let mut x = 1u32;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = split(&junk, &mut out, 0, &mut lens);
        }
    }
}

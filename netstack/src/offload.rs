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
    // A data offset below 5 words would make the "header" shorter than a
    // TCP header (found by fuzzing).
    if headers < l4 + 20 || headers > pkt.len() || mss < MIN_GSO_SIZE {
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

// ---------------------------------------------------------------------
// GRO: the reverse direction. Consecutive segments of one TCP flow are
// written to the TUN as a single super-packet, so the kernel's TCP receive
// path runs once per run instead of once per segment.
// ---------------------------------------------------------------------

/// The fields that place a TCP segment in a flow and a stream.
struct TcpView {
    v4: bool,
    l4: usize,
    headers: usize,
    seq: u32,
    flags: u8,
}

const TCP_ACK: u8 = 0x10;

fn tcp_view(p: &[u8]) -> Option<TcpView> {
    let v4 = match p.first()? >> 4 {
        4 => true,
        6 => false,
        _ => return None,
    };
    let l4 = if v4 {
        // No options, not a fragment, TCP, length consistent.
        if p.len() < 40
            || p[0] != 0x45
            || p[9] != 6
            || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0
        {
            return None;
        }
        if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
            return None;
        }
        // A bad header checksum must reach the kernel (which drops it), not
        // be silently recomputed by coalescing (found by fuzzing).
        if checksum(&p[..20]) != 0 {
            return None;
        }
        20
    } else {
        // TCP directly after the fixed header (no extension headers).
        if p.len() < 60
            || p[6] != 6
            || usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len()
        {
            return None;
        }
        40
    };
    let headers = l4 + usize::from(p[l4 + 12] >> 4) * 4;
    if headers < l4 + 20 || headers > p.len() {
        return None;
    }
    let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
    Some(TcpView {
        v4,
        l4,
        headers,
        seq,
        flags: p[l4 + 13],
    })
}

/// Whether a received segment's TCP checksum is right; the kernel will
/// not check a coalesced packet again, so we must.
fn tcp_checksum_ok(p: &[u8], t: &TcpView) -> bool {
    let tcp_len = p.len() - t.l4;
    let acc = if t.v4 {
        sum(0, &p[12..20])
    } else {
        sum(0, &p[8..40])
    } + 6
        + tcp_len as u32;
    fold(sum(acc, &p[t.l4..])) == 0xffff
}

/// Header bytes that must match for two segments to share a super-packet:
/// everything but lengths, IDs, checksums, sequence number and flags.
fn same_flow(a: &[u8], b: &[u8], ta: &TcpView, tb: &TcpView) -> bool {
    if ta.v4 != tb.v4 || ta.headers != tb.headers {
        return false;
    }
    let ip_same = if ta.v4 {
        a[1] == b[1] && a[6..9] == b[6..9] && a[12..20] == b[12..20]
    } else {
        a[..4] == b[..4] && a[6..40] == b[6..40]
    };
    let l4 = ta.l4;
    // Ports, ack number, data offset and reserved bits, window, urgent
    // pointer, options.
    ip_same
        && a[l4..l4 + 4] == b[l4..l4 + 4]
        && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13]
        && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
        && a[l4 + 18..ta.headers] == b[l4 + 18..tb.headers]
}

/// How many packets from the front of `packets` coalesce into one TCP
/// super-packet (1 when the first cannot be coalesced with anything).
pub fn gro_run(packets: &[&[u8]]) -> usize {
    gro_run_with(packets.len(), |i| packets[i])
}

/// `gro_run` over `count` packets given by an accessor, so callers need
/// not collect them into a slice (no allocation per batch).
pub fn gro_run_with<'a>(count: usize, packet: impl Fn(usize) -> &'a [u8]) -> usize {
    if count == 0 {
        return 0;
    }
    let first = packet(0);
    let Some(t0) = tcp_view(first) else { return 1 };
    let size = first.len() - t0.headers;
    // Only plain ACK data segments start a run.
    if size == 0 || t0.flags != TCP_ACK || !tcp_checksum_ok(first, &t0) {
        return 1;
    }
    let mut total = first.len();
    let mut next_seq = t0.seq.wrapping_add(size as u32);
    let id0 = u16::from_be_bytes([first[4], first[5]]);
    let mut n = 1;
    for i in 1..count {
        let p = packet(i);
        let Some(t) = tcp_view(p) else { break };
        let len = p.len() - t.headers;
        let flags_ok = t.flags & !TCP_PSH == TCP_ACK;
        // IPv4 IDs must count up, as TSO would have numbered them, so the
        // super-packet splits back into exactly these segments.
        let id_ok = !t.v4 || u16::from_be_bytes([p[4], p[5]]) == id0.wrapping_add(n as u16);
        if len == 0
            || !id_ok
            || len > size
            || !flags_ok
            || t.seq != next_seq
            || total + len > 65_535
            || n == GRO_MAX_SEGMENTS
            || !same_flow(first, p, &t0, &t)
            || !tcp_checksum_ok(p, &t)
        {
            break;
        }
        total += len;
        next_seq = next_seq.wrapping_add(len as u32);
        n += 1;
        // A short segment or a PSH ends the run, as in Linux GRO.
        if len < size || t.flags & TCP_PSH != 0 {
            break;
        }
    }
    n
}

/// Segments the kernel accepts in one GSO packet.
pub const GRO_MAX_SEGMENTS: usize = 64;

/// Writes the virtio-net header and super-packet for `run` (as chosen by
/// `gro_run`, at least two segments) into `out`; returns its length. The
/// TCP checksum is left as the pseudo-header sum with NEEDS_CSUM set, the
/// form the kernel expects for a GSO packet.
pub fn gro_build(run: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    gro_build_with(run.len(), |i| run[i], out)
}

/// `gro_build` over `count` packets given by an accessor.
pub fn gro_build_with<'a>(
    count: usize,
    packet: impl Fn(usize) -> &'a [u8],
    out: &mut [u8],
) -> Option<usize> {
    if count < 2 {
        return None;
    }
    let first = packet(0);
    let t0 = tcp_view(first)?;
    let payload: usize = (0..count)
        .map(|i| packet(i).len().saturating_sub(t0.headers))
        .sum();
    let len = t0.headers + payload;
    let total = VNET_HDR_LEN + len;
    if total > out.len() || len > 65_535 {
        return None;
    }
    let (hdr, pkt) = out[..total].split_at_mut(VNET_HDR_LEN);
    pkt[..t0.headers].copy_from_slice(&first[..t0.headers]);
    let mut at = t0.headers;
    for i in 0..count {
        let body = packet(i).get(t0.headers..)?;
        pkt[at..at + body.len()].copy_from_slice(body);
        at += body.len();
    }
    // PSH of the last segment carries over.
    let last = packet(count - 1);
    pkt[t0.l4 + 13] |= last[t0.l4 + 13] & TCP_PSH;
    let l4 = t0.l4;
    if t0.v4 {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        pkt[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    }
    let tcp_len = (len - l4) as u32;
    let pseudo = if t0.v4 {
        sum(0, &pkt[12..20])
    } else {
        sum(0, &pkt[8..40])
    } + 6
        + tcp_len;
    pkt[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    let gso_size = (first.len() - t0.headers) as u16;
    hdr[0] = F_NEEDS_CSUM;
    hdr[1] = if t0.v4 { GSO_TCPV4 } else { GSO_TCPV6 };
    hdr[2..4].copy_from_slice(&(t0.headers as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&gso_size.to_le_bytes());
    hdr[6..8].copy_from_slice(&(l4 as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    Some(total)
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

    /// Splits a super-packet, then coalesces the segments again: the
    /// result must carry the same stream, and splitting it once more must
    /// give segments with valid checksums.
    #[test]
    fn gro_reassembles_what_tso_split() {
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
        let pkt = super_packet_v4(&payload, TCP_ACK | TCP_PSH);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1380,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut out = slots(32);
        let mut lens = [0usize; 32];
        let n = split(&read_with(hdr, &pkt), &mut out, 0, &mut lens).expect("split");
        let segs: Vec<&[u8]> = (0..n).map(|i| &out[i][..lens[i]]).collect();
        assert_eq!(gro_run(&segs), n, "all {n} segments coalesce");
        let mut sup = vec![0u8; 70_000];
        let len = gro_build(&segs, &mut sup).expect("build");
        let rebuilt = VnetHdr::parse(&sup).expect("hdr");
        assert_eq!(rebuilt.gso_type, GSO_TCPV4);
        assert_eq!(rebuilt.gso_size, 1380);
        assert_eq!(&sup[VNET_HDR_LEN + 40..len], &payload[..]);
        assert_eq!(
            sup[VNET_HDR_LEN + 33] & TCP_PSH,
            TCP_PSH,
            "PSH of the last segment kept"
        );
        // The kernel would split it back: same checks as for TSO.
        let mut again = slots(32);
        let mut lens2 = [0usize; 32];
        let m = split(&sup[..len], &mut again, 0, &mut lens2).expect("resplit");
        assert_eq!(m, n);
        for i in 0..m {
            assert_eq!(
                &again[i][..lens2[i]],
                segs[i],
                "segment {i} identical after the round trip"
            );
        }
    }

    #[test]
    fn gro_refuses_gaps_other_flows_bad_checksums_and_flags() {
        let payload = vec![7u8; 4140];
        let pkt = super_packet_v4(&payload, TCP_ACK);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1380,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut out = slots(4);
        let mut lens = [0usize; 4];
        let n = split(&read_with(hdr, &pkt), &mut out, 0, &mut lens).expect("split");
        assert_eq!(n, 3);
        let seg = |i: usize| out[i][..lens[i]].to_vec();
        let (a, b, c) = (seg(0), seg(1), seg(2));
        assert_eq!(gro_run(&[&a, &b, &c]), 3);
        assert_eq!(gro_run(&[&a, &c]), 1, "sequence gap");
        let mut other_port = b.clone();
        other_port[21] ^= 1;
        assert_eq!(gro_run(&[&a, &other_port]), 1, "other flow");
        let mut corrupt = b.clone();
        corrupt[100] ^= 0xff;
        assert_eq!(gro_run(&[&a, &corrupt]), 1, "bad checksum never joins");
        let mut bad_ip = b.clone();
        bad_ip[11] ^= 0x01;
        assert_eq!(
            gro_run(&[&a, &bad_ip]),
            1,
            "bad IPv4 header checksum never joins"
        );
        let mut id_gap = b.clone();
        id_gap[5] = id_gap[5].wrapping_add(1);
        id_gap[10..12].fill(0);
        let c = checksum(&id_gap[..20]);
        id_gap[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(gro_run(&[&a, &id_gap]), 1, "IPv4 IDs must count up");
        let mut syn = a.clone();
        syn[33] |= 0x02;
        assert_eq!(
            gro_run(&[&syn, &b]),
            1,
            "only plain ACK segments start a run"
        );
        assert_eq!(gro_run(&[&a[..30]]), 1);
        assert_eq!(gro_run(&[]), 0);
        let junk = [0x45u8; 60];
        assert_eq!(gro_run(&[&junk, &a]), 1);
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

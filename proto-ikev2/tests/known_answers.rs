//! Known answers: RFC 5903 (ECP groups), RFC 7748 (Curve25519), RFC 4231
//! (the HMAC-SHA2 PRFs), and prf+'s construction spelled out.
#![allow(clippy::unwrap_used)] // a test panics to report a failure

use proto_ikev2::crypto::{DhGroup, KeyShare, Prf};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn check_pair(group: DhGroup, i: &str, gi: &str, r: &str, gr: &str, gir: &str) {
    let a = KeyShare::from_secret(group, &h(i)).unwrap();
    let b = KeyShare::from_secret(group, &h(r)).unwrap();
    assert_eq!(a.public(), &h(gi)[..], "{group:?} g^i");
    assert_eq!(b.public(), &h(gr)[..], "{group:?} g^r");
    assert_eq!(
        &a.shared(b.public()).unwrap()[..],
        &h(gir)[..],
        "{group:?} g^ir"
    );
    assert_eq!(
        &b.shared(a.public()).unwrap()[..],
        &h(gir)[..],
        "{group:?} g^ri"
    );
}

#[test]
fn rfc5903_ecp256() {
    check_pair(
        DhGroup::Ecp256,
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180
         5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63
         56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    );
}

#[test]
fn rfc5903_ecp384() {
    check_pair(
        DhGroup::Ecp384,
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655
         E35B538041E649EE3FAEF896783AB194",
        "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6
         DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F
         65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942
         E0308312916B8ED2960E4BD55A7448FC",
        "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D
         0D1AC43A0336DEF96FDA41D0774A3571DCFBEC7AACF3196472169E838430367F
         66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4
         D603135569B9E9D09CF5D4A270F59746",
    );
}

#[test]
fn rfc7748_curve25519() {
    check_pair(
        DhGroup::Curve25519,
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    );
}

#[test]
fn modp2048_agrees_and_generator_power_is_right() {
    // 2^1 mod p = 2 and 2^2 = 4: the exponentiation is wired correctly.
    let mut one = [0u8; 32];
    one[31] = 1;
    let a = KeyShare::from_secret(DhGroup::Modp2048, &one).unwrap();
    let mut two = [0u8; 256];
    two[255] = 2;
    assert_eq!(a.public(), &two[..]);
    let mut x = [0u8; 32];
    x[31] = 2;
    let b = KeyShare::from_secret(DhGroup::Modp2048, &x).unwrap();
    // (2^1)^2 = 4 from both sides.
    let mut four = [0u8; 256];
    four[255] = 4;
    assert_eq!(&b.shared(a.public()).unwrap()[..], &four[..]);
    // Random shares agree.
    let x = [0x5au8; 32];
    let y = [0xa5u8; 32];
    let c = KeyShare::from_secret(DhGroup::Modp2048, &x).unwrap();
    let d = KeyShare::from_secret(DhGroup::Modp2048, &y).unwrap();
    assert_eq!(
        &c.shared(d.public()).unwrap()[..],
        &d.shared(c.public()).unwrap()[..]
    );
}

#[test]
fn invalid_public_values_are_refused() {
    use proto_ikev2::crypto::DhError;
    let x = [7u8; 32];
    let modp = KeyShare::from_secret(DhGroup::Modp2048, &x).unwrap();
    let mut one = vec![0u8; 256];
    one[255] = 1;
    assert_eq!(modp.shared(&one), Err(DhError::InvalidPublic(14)));
    assert_eq!(modp.shared(&[0xff; 256]), Err(DhError::InvalidPublic(14)));
    assert!(matches!(modp.shared(&[1; 10]), Err(DhError::Length { .. })));

    let p256 = KeyShare::generate(
        DhGroup::Ecp256,
        &mut rand_chacha::ChaCha20Rng::from_seed_u64(1),
    );
    assert_eq!(p256.shared(&[1u8; 64]), Err(DhError::InvalidPublic(19)));
    let p384 = KeyShare::generate(
        DhGroup::Ecp384,
        &mut rand_chacha::ChaCha20Rng::from_seed_u64(2),
    );
    assert_eq!(p384.shared(&[1u8; 96]), Err(DhError::InvalidPublic(20)));
    let x25519 = KeyShare::from_secret(DhGroup::Curve25519, &x).unwrap();
    // The zero point is of low order: the result would be all zeros.
    assert_eq!(x25519.shared(&[0u8; 32]), Err(DhError::InvalidPublic(31)));
}

trait SeedU64 {
    fn from_seed_u64(n: u64) -> Self;
}
impl SeedU64 for rand_chacha::ChaCha20Rng {
    fn from_seed_u64(n: u64) -> Self {
        use rand_core::SeedableRng;
        Self::seed_from_u64(n)
    }
}

#[test]
fn rfc4231_hmac_prfs() {
    let key = [0x0bu8; 20];
    let data = b"Hi There";
    let cases = [
        (Prf::HmacSha256, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (Prf::HmacSha384, "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"),
        (Prf::HmacSha512, "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
    ];
    for (prf, want) in cases {
        assert_eq!(&prf.compute(&key, &[data])[..], &h(want)[..], "{prf:?}");
        // The parts of the input are concatenated.
        assert_eq!(&prf.compute(&key, &[b"Hi ", b"There"])[..], &h(want)[..]);
    }
}

#[test]
fn prf_plus_is_the_rfc_7296_construction() {
    let prf = Prf::HmacSha256;
    let key = b"key";
    let seed = b"seed";
    let t1 = prf.compute(key, &[seed, &[1]]);
    let t2 = prf.compute(key, &[&t1, seed, &[2]]);
    let t3 = prf.compute(key, &[&t2, seed, &[3]]);
    let want: Vec<u8> = [&t1[..], &t2[..], &t3[..]].concat();
    let got = prf.plus(key, &[b"se", b"ed"], 80).unwrap();
    assert_eq!(&got[..], &want[..80]);
    // 255 blocks at most: the counter is one octet.
    assert!(prf.plus(key, &[seed], 255 * 32).is_some());
    assert!(prf.plus(key, &[seed], 255 * 32 + 1).is_none());
}

/// strongSwan's own computation of one exchange with our initiator
/// (tests/data/strongswan-keys.txt): SKEYSEED, prf+ and the split into
/// the seven keys, the MACed IDs and PSK AUTH of both sides.
#[test]
fn key_schedule_and_psk_auth_match_strongswan() {
    use proto_ikev2::crypto::auth::{maced_id, psk_auth};
    use proto_ikev2::crypto::keys::KeyLengths;
    use proto_ikev2::crypto::IkeKeys;
    use proto_ikev2::wire::consts::{id_type, payload as pt};
    use proto_ikev2::wire::{Message, Payload};

    let text = include_str!("data/strongswan-keys.txt");
    let v = |k: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap();
        h(line.split_whitespace().nth(1).unwrap())
    };
    let (msg1, octets_i, octets_r) = (v("msg1"), v("octets_i"), v("octets_r"));
    let msg2 = &octets_r[..octets_r.len() - 64];
    let nonce = |m: &[u8]| {
        let m = Message::parse(m).unwrap();
        match m.find(pt::NONCE) {
            Some(Payload::Nonce(n)) => n.to_vec(),
            _ => panic!("no nonce"),
        }
    };
    let (ni, nr) = (nonce(&msg1), nonce(msg2));
    let m2 = Message::parse(msg2).unwrap();
    let (spi_i, spi_r) = (m2.header.spi_i, m2.header.spi_r);
    // The octets are message | other side's nonce | prf(SK_p, ID').
    assert_eq!(&octets_i[msg1.len()..msg1.len() + 32], &nr[..]);
    assert_eq!(&octets_r[msg2.len()..msg2.len() + 32], &ni[..]);

    let prf = Prf::HmacSha256;
    let lens = KeyLengths { integ: 0, encr: 36 };
    let k = IkeKeys::initial(prf, lens, &v("g_ir"), &ni, &nr, spi_i, spi_r).unwrap();
    assert_eq!(
        &prf.compute(&[&ni[..], &nr[..]].concat(), &[&v("g_ir")])[..],
        &v("skeyseed")[..]
    );
    for (ours, theirs) in [
        (&k.sk_d, "sk_d"),
        (&k.sk_ei, "sk_ei"),
        (&k.sk_er, "sk_er"),
        (&k.sk_pi, "sk_pi"),
        (&k.sk_pr, "sk_pr"),
    ] {
        assert_eq!(&ours[..], &v(theirs)[..], "{theirs}");
    }
    assert!(
        k.sk_ai.is_empty() && k.sk_ar.is_empty(),
        "AEAD: no integrity keys"
    );

    let psk = b"ike-lab-psk-0123456789abcdef";
    let id_i = maced_id(prf, &k.sk_pi, id_type::FQDN, b"gw-b.ike.lab");
    let id_r = maced_id(prf, &k.sk_pr, id_type::FQDN, b"gw-a.ike.lab");
    assert_eq!(&octets_i[msg1.len() + 32..], &id_i[..]);
    assert_eq!(&octets_r[msg2.len() + 32..], &id_r[..]);
    assert_eq!(&psk_auth(prf, psk, &msg1, &nr, &id_i)[..], &v("auth_i")[..]);
    assert_eq!(&psk_auth(prf, psk, msg2, &ni, &id_r)[..], &v("auth_r")[..]);
}

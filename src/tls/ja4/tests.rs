//! JA4 against FoxIO's published example and an independent implementation's vectors; the
//! parser against arbitrary bytes.

use proptest::prelude::*;

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn vec16(b: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(b.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn vec8(b: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::try_from(b.len()).unwrap()];
    v.extend_from_slice(b);
    v
}

/// A ClientHello handshake message with `ciphers` and `extensions` (type, body).
fn hello_message(ciphers: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]);
    body.extend(vec8(&[0x11; 32]));
    body.extend(vec16(&u16s(ciphers)));
    body.extend(vec8(&[0]));
    let exts: Vec<u8> = extensions
        .iter()
        .flat_map(|(t, b)| {
            let mut e = t.to_be_bytes().to_vec();
            e.extend(vec16(b));
            e
        })
        .collect();
    body.extend(vec16(&exts));
    let mut m = vec![CLIENT_HELLO];
    m.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    m.extend(body);
    m
}

/// `message` in TLS handshake records of at most `max` bytes each.
fn records(message: &[u8], max: usize) -> Vec<u8> {
    message
        .chunks(max)
        .flat_map(|c| {
            let mut r = vec![HANDSHAKE, 0x03, 0x01];
            r.extend(vec16(c));
            r
        })
        .collect()
}

/// The hello behind FoxIO's published Chrome example (JA4 README and technical details): its
/// raw form lists these ciphers, extensions and signature algorithms. GREASE sprinkled in as
/// Chrome sends it.
fn foxio_chrome() -> Vec<u8> {
    let ciphers = [
        0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let sigs = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let sni = vec16(&[&[0u8][..], &vec16(b"links.example.com")].concat());
    let alpn = vec16(&[vec8(b"h2"), vec8(b"http/1.1")].concat());
    let mut exts = vec![(0x3a3a, vec![]), (0x0000, sni), (0x0010, alpn)];
    for e in [
        0x0005, 0x000a, 0x000b, 0x0012, 0x0015, 0x0017, 0x001b, 0x0023, 0x002d, 0x0033, 0x4469,
        0xff01,
    ] {
        exts.push((e, vec![0]));
    }
    exts.push((0x000d, vec16(&u16s(&sigs))));
    exts.push((0x002b, vec8(&u16s(&[0x7a7a, 0x0304, 0x0303]))));
    exts.push((0x1a1a, vec![0]));
    hello_message(&ciphers, &exts)
}

#[test]
fn foxios_published_chrome_example() {
    let ja4 = fingerprint(&records(&foxio_chrome(), 16384)).unwrap();
    assert_eq!(ja4.as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(ja4.head(), "t13d1516h2");
    assert_eq!(ja4.version(), "13");
    assert_eq!(ja4.alpn(), "h2");
    assert_eq!(Ja4::parse(ja4.as_str()), Some(ja4));
}

#[test]
fn a_hello_split_across_records_has_the_same_fingerprint() {
    let m = foxio_chrome();
    let whole = fingerprint(&records(&m, 16384)).unwrap();
    for max in [1, 3, 4, 5, 100, m.len() - 1] {
        let mut bytes = records(&m, max);
        // What follows the hello (a ChangeCipherSpec, say) is not read.
        bytes.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        assert_eq!(fingerprint(&bytes), Some(whole), "records of {max}");
    }
    // A hello cut short, or after another record type, has none.
    let bytes = records(&m, 100);
    assert_eq!(fingerprint(&bytes[..bytes.len() - 1]), None);
    assert_eq!(
        fingerprint(&[&[21, 3, 3, 0, 2, 2, 40][..], &bytes].concat()),
        None
    );
}

#[test]
fn matches_an_independent_implementation_on_real_and_generated_hellos() {
    let mut n = 0;
    for line in include_str!("vectors.txt").lines() {
        if line.starts_with('#') {
            continue;
        }
        let (hex, expected) = line.split_once(' ').unwrap();
        let got = fingerprint(&unhex(hex)).map(|j| j.to_string());
        assert_eq!(got.as_deref(), Some(expected), "{hex}");
        assert!(Ja4::parse(expected).is_some(), "{expected}");
        n += 1;
    }
    assert!(n >= 50, "{n} vectors");
}

/// The real hellos at the head of `vectors.txt`, in order: curl, Python's http.client,
/// python-requests, wget, Node.js, Chromium.
fn measured() -> Vec<Ja4> {
    include_str!("vectors.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .take(6)
        .map(|l| fingerprint(&unhex(l.split_once(' ').unwrap().0)).unwrap())
        .collect()
}

#[test]
fn the_measured_clients_fingerprints() {
    let got: Vec<String> = measured().iter().map(Ja4::to_string).collect();
    assert_eq!(
        got,
        [
            "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
            "t13d1813h1_85036bcba153_d339722ba4af",
            "t13i1811h1_85036bcba153_b26ce05bbdd6",
            "t13i291200_723694b0fccc_899037bd0b8c",
            "t13d591000_a33745022dd6_1f22a2ca17c4",
            "t13d1516h2_8daaf6152771_d8a2da3f94cd",
        ]
    );
}

#[test]
fn alpn_and_version_codes() {
    assert_eq!(alpn_code(None), *b"00");
    assert_eq!(alpn_code(Some(b"")), *b"00");
    assert_eq!(alpn_code(Some(b"h")), *b"hh");
    assert_eq!(alpn_code(Some(b"http/1.1")), *b"h1");
    assert_eq!(alpn_code(Some(b"h2")), *b"h2");
    assert_eq!(alpn_code(Some(b"\xba\xad")), *b"bd");
    assert_eq!(alpn_code(Some(b"h\x1f")), *b"6f");
    assert_eq!(version_code(0x0304), b"13");
    assert_eq!(version_code(0x0002), b"s2");
    assert_eq!(version_code(0x1234), b"00");
    assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x0a1a) && !grease(0x1301));
}

/// FoxIO's JA4 specification: when the first or last byte of the first ALPN protocol is not an
/// ASCII letter or digit, the pair is the first and last character of the protocol's hex.
#[test]
fn an_alpn_ending_in_a_byte_that_is_not_a_letter_or_digit_is_written_as_its_hex_ends() {
    for (alpn, code) in [
        // The specification's examples.
        (&b"\xab"[..], b"ab"),
        (b"\xab\xcd", b"ad"),
        (b"\x30\xab", b"3b"),
        (b"\x30\x31\xab\xcd", b"3d"),
        (b"\x30\xab\xcd\x31", b"01"),
        // Printable punctuation too, at either end: `5f78`, `6832` and `682f`.
        (b"_x", b"58"),
        (b"h2_", b"6f"),
        (b"/h", b"28"),
        (b"h/", b"6f"),
        // Letters and digits at both ends are themselves, whatever lies between.
        (b"h\xff2", b"h2"),
        (b"acme-tls/1", b"a1"),
    ] {
        assert_eq!(alpn_code(Some(alpn)), *code, "{alpn:02x?}");
    }
    // What a hello with such an ALPN gets is a fingerprint that reads back.
    let hello = hello_message(&[0x1301], &[(0x0010, vec16(&vec8(b"\xab\xcd")))]);
    let fp = fingerprint(&records(&hello, 16384)).unwrap();
    assert_eq!(fp.alpn(), "ad");
    assert_eq!(Ja4::parse(fp.as_str()), Some(fp));
}

#[test]
fn parse_accepts_only_the_ja4_shape() {
    assert!(Ja4::parse("t13d1516h2_8daaf6152771_e5627efa2ab1").is_some());
    for bad in [
        "",
        "t13d1516h2_8daaf6152771_e5627efa2ab",
        "x13d1516h2_8daaf6152771_e5627efa2ab1",
        "t13x1516h2_8daaf6152771_e5627efa2ab1",
        "t13d15a6h2_8daaf6152771_e5627efa2ab1",
        "t13d1516h2-8daaf6152771_e5627efa2ab1",
        "t13d1516h2_8DAAF6152771_e5627efa2ab1",
        "t13d1516h2_8daaf6152771_e5627efa2ab1x",
        // The ALPN pair is letters or digits, never punctuation.
        "t13d1516h/_8daaf6152771_e5627efa2ab1",
        "t13d1516 2_8daaf6152771_e5627efa2ab1",
    ] {
        assert_eq!(Ja4::parse(bad), None, "{bad}");
    }
}

#[test]
fn hex_lists_hash_as_their_comma_separated_text_across_chunks() {
    for n in [0usize, 1, 2, 63, 64, 65, 128, 200] {
        let values: Vec<u16> = (0..n).map(|i| (i * 0x0101 + 0x0a0b) as u16).collect();
        let text = values
            .iter()
            .map(|v| format!("{v:04x}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut h = digest::Context::new(&digest::SHA256);
        hex_list(&mut h, &values);
        assert_eq!(
            h.finish().as_ref(),
            digest::digest(&digest::SHA256, text.as_bytes()).as_ref(),
            "{n} values"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = fingerprint(&bytes);
    }

    #[test]
    fn a_damaged_hello_never_panics(at in 0usize..600, value in any::<u8>(), cut in 0usize..600) {
        let mut bytes = records(&foxio_chrome(), 200);
        let at = at % bytes.len();
        bytes[at] = value;
        bytes.truncate(bytes.len() - cut % bytes.len());
        if let Some(j) = fingerprint(&bytes) {
            prop_assert!(Ja4::parse(j.as_str()).is_some(), "{j}");
        }
    }
}

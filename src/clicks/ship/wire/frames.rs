//! The protocol's bytes: the publish frame written, and the server's operations read from the
//! front of a buffer, each only once it is whole.

use bytes::BytesMut;

use super::super::nats::{Ack, AckReply, PublishError};

/// The longest protocol line read (an `INFO` can list a cluster's URLs).
const MAX_LINE: usize = 64 << 10;

/// The largest message read: nats-server's ceiling for `max_payload` (64 MiB), which no message
/// it delivers passes. A size over it is not waited for (nor added to, which could overflow).
const MAX_MSG: usize = 64 << 20;

/// Appends publish `n`'s frame to `out`: `HPUB <subject> <inbox>.<n> <hdr> <total>\r\n`, the
/// headers (`Nats-Msg-Id` when there is an id), the payload and `\r\n`.
pub(super) fn frame(
    out: &mut BytesMut,
    head: &[u8],
    id: Option<&str>,
    payload: &[u8],
    n: u64,
    max_payload: usize,
) -> Result<(), PublishError> {
    const START: &[u8] = b"NATS/1.0\r\n";
    const KEY: &[u8] = b"Nats-Msg-Id: ";
    // A header value ends at a line break: an id holding one goes without (none does: ids are
    // `{node}-{seq}`).
    let id = id.filter(|id| !id.bytes().any(|b| b == b'\r' || b == b'\n'));
    let headers = START.len() + id.map_or(0, |id| KEY.len() + id.len() + 2) + 2;
    let total = headers + payload.len();
    if max_payload > 0 && total > max_payload {
        return Err(PublishError::TooLarge {
            bytes: total,
            max: max_payload,
        });
    }
    out.reserve(head.len() + 60 + total);
    out.extend_from_slice(head);
    push_decimal(out, n as usize);
    out.extend_from_slice(b" ");
    push_decimal(out, headers);
    out.extend_from_slice(b" ");
    push_decimal(out, total);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(START);
    if let Some(id) = id {
        out.extend_from_slice(KEY);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `n` in decimal (without the formatting machinery: this runs per click).
fn push_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Op<'a> {
    /// `MSG` or `HMSG` (`headers` empty for `MSG`).
    Msg {
        subject: &'a [u8],
        headers: &'a [u8],
        payload: &'a [u8],
    },
    /// `INFO` and its JSON.
    Info(&'a [u8]),
    Ping,
    Pong,
    Err(&'a [u8]),
    /// `+OK` or anything else: nothing to do.
    Other,
}

/// Where the protocol line at the start of `buf` ends (its `\r`); `None` until it is all there.
fn line_end(buf: &[u8]) -> Result<Option<usize>, PublishError> {
    match memchr::memchr(b'\n', buf) {
        Some(at) if at > 0 && buf[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err(PublishError::Protocol("a protocol line not ended by CRLF")),
        None if buf.len() > MAX_LINE => Err(PublishError::Protocol("a protocol line is too long")),
        None => Ok(None),
    }
}

/// The first whole operation in `buf` and how many bytes it takes; `None` until it is all there.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, PublishError> {
    let Some(end) = line_end(buf)? else {
        return Ok(None);
    };
    let line = &buf[..end];
    let body = end + 2;
    let mut args = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|a| !a.is_empty());
    let op = match args.next().unwrap_or_default() {
        b"MSG" | b"HMSG" => {
            let headed = line.starts_with(b"H");
            // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <hdr> <total>.
            let sizes = if headed { 2 } else { 1 };
            let mut fields = [&b""[..]; 5];
            let mut count = 0;
            for a in args {
                *fields
                    .get_mut(count)
                    .ok_or(PublishError::Protocol("a MSG line with too many fields"))? = a;
                count += 1;
            }
            let args = &fields[..count];
            if args.len() < 2 + sizes || args.len() > 3 + sizes {
                return Err(PublishError::Protocol(
                    "a MSG line with the wrong number of fields",
                ));
            }
            let number = |a: &[u8]| {
                decimal(a)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(PublishError::Protocol("a MSG size that is not a number"))
            };
            let total = number(args[args.len() - 1])?;
            let hdr = if headed {
                number(args[args.len() - 2])?
            } else {
                0
            };
            if hdr > total {
                return Err(PublishError::Protocol("an HMSG whose headers outsize it"));
            }
            if total > MAX_MSG {
                return Err(PublishError::Protocol(
                    "a MSG larger than any server's max_payload",
                ));
            }
            // `body` is within `buf` and `total` at most MAX_MSG: the sum cannot overflow.
            let end = body + total;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(PublishError::Protocol("a message not followed by CRLF"));
            }
            let op = Op::Msg {
                subject: args[0],
                headers: &buf[body..body + hdr],
                payload: &buf[body + hdr..end],
            };
            return Ok(Some((op, end + 2)));
        }
        b"INFO" => Op::Info(line[4..].trim_ascii_start()),
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"-ERR" => Op::Err(line),
        _ => Op::Other,
    };
    Ok(Some((op, body)))
}

/// The publish number at the end of a reply subject (`<inbox>.<n>`).
pub(super) fn publish_number(subject: &[u8]) -> Option<u64> {
    decimal(&subject[memchr::memrchr(b'.', subject)? + 1..])
}

/// ASCII digits as a number (`None` if empty, not all digits, or too large); without the
/// standard library's UTF-8 check and sign handling, which cost a third of reading an ack.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// An acknowledgement as nats-server writes one without a domain, `{"stream":"<name>", "seq":<n>}`
/// or with `,"duplicate": true` before the brace (spaces between tokens as any server version
/// puts them); `None` for anything else, which the JSON parser reads. Saves most of the parser's
/// ~1 000 instructions per click shipped.
fn plain_ack(payload: &[u8]) -> Option<(&[u8], Ack)> {
    fn eat<'a>(rest: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
        rest.trim_ascii_start().strip_prefix(token)
    }
    let rest = eat(eat(eat(payload, b"{")?, br#""stream""#)?, b":")?;
    let name = eat(rest, b"\"")?;
    let (name, rest) = name.split_at(memchr::memchr(b'"', name)?);
    let rest = eat(eat(rest, b"\"")?, b",")?;
    let rest = eat(eat(rest, br#""seq""#)?, b":")?.trim_ascii_start();
    let digits = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq = decimal(&rest[..digits])?;
    let rest = &rest[digits..];
    let (duplicate, rest) = match eat(rest, b"}") {
        Some(rest) => (false, rest),
        None => {
            let rest = eat(eat(eat(rest, b",")?, br#""duplicate""#)?, b":")?;
            (true, eat(eat(rest, b"true")?, b"}")?)
        }
    };
    rest.trim_ascii()
        .is_empty()
        .then_some((name, Ack { seq, duplicate }))
}

/// `-ERR 'text'` as an error.
pub(super) fn server_error(line: &[u8]) -> PublishError {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start_matches("-ERR").trim().trim_matches('\'');
    PublishError::Server(text.to_owned())
}

/// The acknowledgement in a reply's payload to a publish on `subject`, which stream `stream`
/// must have sent.
pub(in super::super) fn parse_ack(
    payload: &[u8],
    subject: &str,
    stream: &str,
) -> Result<Ack, PublishError> {
    let other = |took: &[u8]| PublishError::OtherStream {
        subject: subject.to_owned(),
        stream: stream.to_owned(),
        took: String::from_utf8_lossy(took).into_owned(),
    };
    if let Some((name, ack)) = plain_ack(payload) {
        return match name == stream.as_bytes() {
            true => Ok(ack),
            false => Err(other(name)),
        };
    }
    let reply: AckReply<'_> = serde_json::from_slice(payload).map_err(PublishError::Malformed)?;
    if let Some(e) = reply.error {
        return Err(PublishError::Refused {
            err_code: e.err_code,
            description: e.description.into_owned(),
        });
    }
    // `{}` or any other JSON: not a stream's answer, and nothing is known to be stored.
    let (Some(name), Some(seq)) = (reply.stream, reply.seq) else {
        return Err(PublishError::NotAck);
    };
    if name != stream {
        return Err(other(name.as_bytes()));
    }
    Ok(Ack {
        seq,
        duplicate: reply.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op of `buf`, parsed as the connection does: from the front, as far as it is whole.
    fn ops(buf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((op, used)) = parse(&buf[at..]).unwrap() {
            out.push(format!("{op:?}"));
            at += used;
        }
        out
    }

    const SERVER: &[u8] = b"INFO {\"headers\":true}\r\nPING\r\n\
        MSG _INBOX.x.7 1 27\r\n{\"stream\":\"CLICKS\",\"seq\":9}\r\n\
        +OK\r\nHMSG _INBOX.x.8 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
        MSG _INBOX.x.9 1 _INBOX.reply 2\r\n{}\r\n-ERR 'Maximum Connections Exceeded'\r\n";

    #[test]
    fn the_servers_operations_are_read_whole_whatever_the_reads_split() {
        let whole = ops(SERVER);
        assert_eq!(whole.len(), 7, "{whole:?}");
        assert_eq!(
            whole[2],
            format!(
                "{:?}",
                Op::Msg {
                    subject: b"_INBOX.x.7",
                    headers: b"",
                    payload: br#"{"stream":"CLICKS","seq":9}"#,
                }
            )
        );
        assert_eq!(
            whole[4],
            format!(
                "{:?}",
                Op::Msg {
                    subject: b"_INBOX.x.8",
                    headers: b"NATS/1.0 503\r\n\r\n",
                    payload: b"",
                }
            )
        );
        // Cut anywhere, the front parses to what it holds whole and no more, and the rest follows.
        for cut in 0..SERVER.len() {
            let mut front = Vec::new();
            let mut at = 0;
            while let Some((op, used)) = parse(&SERVER[at..cut]).unwrap() {
                front.push(format!("{op:?}"));
                at += used;
            }
            assert_eq!(front[..], whole[..front.len()], "cut at {cut}");
            let mut rest = ops(&SERVER[at..]);
            front.append(&mut rest);
            assert_eq!(front, whole, "cut at {cut}");
        }
    }

    #[test]
    fn what_the_server_should_not_send_is_an_error_not_a_guess() {
        for bad in [
            &b"MSG a 1\r\n"[..],
            b"MSG a 1 b c 2 3\r\n",
            b"MSG a 1 x\r\n",
            b"HMSG a 1 9 2\r\nxx\r\n",
            b"MSG a 1 2\r\nabcd\r\n",
            b"PING\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'x'; MAX_LINE + 1]).is_err());
        assert!(parse(&[b'x'; 100]).unwrap().is_none());
    }

    /// A size from the network is never added to unchecked: near `usize::MAX` it would wrap (a
    /// slice out of bounds) or overflow (a panic in a debug build).
    #[test]
    fn a_message_size_past_any_max_payload_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"MSG _INBOX.x.1 1 18446744073709551614\r\n{}\r\n"[..],
            b"MSG _INBOX.x.1 1 18446744073709551615\r\n{}\r\n",
            b"HMSG _INBOX.x.1 1 12 18446744073709551614\r\nNATS/1.0\r\n\r\n{}\r\n",
            format!("MSG _INBOX.x.1 1 {}\r\n", MAX_MSG + 1).as_bytes(),
        ] {
            assert!(
                matches!(parse(bad), Err(PublishError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The largest a server may send is still waited for.
        let line = format!("MSG _INBOX.x.1 1 {MAX_MSG}\r\n");
        assert!(parse(line.as_bytes()).unwrap().is_none());
    }

    /// Only a stream's answer says the message is stored: JSON without its fields (another
    /// subscriber answering on the subject) is not a successful publish.
    #[test]
    fn an_answer_without_stream_and_seq_is_no_acknowledgement() {
        for p in [
            &b"{}"[..],
            br#"{"seq":5}"#,
            br#"{"stream":"CLICKS"}"#,
            br#"{"ok":true}"#,
            br#"{"stream":"CLICKS","seq":null}"#,
        ] {
            assert!(
                matches!(
                    parse_ack(p, "clicks.a", "CLICKS"),
                    Err(PublishError::NotAck)
                ),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        assert_eq!(
            parse_ack(
                br#"{"stream":"CLICKS","domain":"hub","seq":7}"#,
                "clicks.a",
                "CLICKS"
            )
            .unwrap(),
            Ack {
                seq: 7,
                duplicate: false
            }
        );
    }

    #[test]
    fn a_publish_is_one_hpub_frame_with_the_id_as_its_only_header() {
        let mut out = BytesMut::new();
        let payload = br#"{"ts":"x","click_id":"edge-a-42"}"#;
        frame(
            &mut out,
            b"HPUB clicks.a _INBOX.x.",
            Some("edge-a-42"),
            payload,
            7,
            0,
        )
        .unwrap();
        let headers = "NATS/1.0\r\nNats-Msg-Id: edge-a-42\r\n\r\n";
        let expected = format!(
            "HPUB clicks.a _INBOX.x.7 {} {}\r\n{headers}{}\r\n",
            headers.len(),
            headers.len() + payload.len(),
            String::from_utf8_lossy(payload)
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);

        let mut out = BytesMut::new();
        frame(&mut out, b"HPUB s r.", None, b"{}", u64::MAX, 0).unwrap();
        assert_eq!(
            &out[..],
            format!("HPUB s r.{} 12 14\r\nNATS/1.0\r\n\r\n{{}}\r\n", u64::MAX).as_bytes()
        );

        let mut out = BytesMut::new();
        frame(&mut out, b"HPUB s r.", Some("bad\r\nX: y"), b"{}", 1, 0).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("X: y"));

        let err = frame(&mut out, b"HPUB s r.", Some("i"), &[b'x'; 100], 1, 100).unwrap_err();
        assert!(
            matches!(
                err,
                PublishError::TooLarge {
                    bytes: 128,
                    max: 100
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_answer_to_each_publish_is_found_by_its_number() {
        assert_eq!(publish_number(b"_INBOX.abc.0"), Some(0));
        assert_eq!(
            publish_number(b"_INBOX.abc.18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(publish_number(b"_INBOX.abc.x"), None);
        assert_eq!(publish_number(b"nodot"), None);
        assert_eq!(publish_number(b"_INBOX.abc."), None);
        assert_eq!(publish_number(b"_INBOX.abc.18446744073709551616"), None);
        assert_eq!(publish_number(b"_INBOX.abc.-1"), None);
        assert_eq!(decimal(b"0042"), Some(42));
    }

    #[test]
    fn the_plain_acknowledgement_reads_as_the_json_parser_reads_it() {
        let json = |p: &[u8]| {
            let r: AckReply<'_> = serde_json::from_slice(p).ok()?;
            let stream = r.stream.filter(|_| r.error.is_none())?.into_owned();
            let ack = Ack {
                seq: r.seq?,
                duplicate: r.duplicate,
            };
            Some((stream.into_bytes(), ack))
        };
        let plain_ack = |p| plain_ack(p).map(|(name, ack)| (name.to_vec(), ack));
        let plain: &[&[u8]] = &[
            br#"{"stream":"CLICKS","seq":42}"#,
            br#"{"stream":"CLICKS","seq":7,"duplicate":true}"#,
            br#"{"stream":"","seq":0}"#,
            // nats-server 2.9's own spacing.
            br#"{"stream":"T", "seq":1}"#,
            br#"{"stream":"CLICKS","seq":7 }"#,
            br#"{"stream":"T", "seq":1,"duplicate": true}"#,
            b" { \"stream\" : \"T\" , \"seq\" : 1 , \"duplicate\" : true } \r\n",
        ];
        for p in plain {
            assert_eq!(plain_ack(p), json(p), "{}", String::from_utf8_lossy(p));
            assert!(plain_ack(p).is_some());
        }
        // Anything else goes to the JSON parser.
        let other: &[&[u8]] = &[
            br#"{"stream":"CLICKS","domain":"hub","seq":7,"duplicate":true}"#,
            br#"{"stream":"CLICKS","seq":7,"duplicate":false}"#,
            br#"{"stream":"CLICKS","seq":-7}"#,
            br#"{"stream":"CLICKS","seq":99999999999999999999}"#,
            br#"{"stream":"a"b","seq":1}"#,
            br#"{"stream":"CLICKS","seq":1}x"#,
            br#"{"error":{"code":503,"err_code":10077,"description":"x"}}"#,
        ];
        for p in other {
            assert_eq!(plain_ack(p), None, "{}", String::from_utf8_lossy(p));
        }
        assert_eq!(
            parse_ack(other[0], "clicks.a", "CLICKS").unwrap(),
            Ack {
                seq: 7,
                duplicate: true
            }
        );
    }
}

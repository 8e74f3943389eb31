use super::super::wire;
use super::*;

/// The acknowledgement in `payload` to a publish on `clicks.a`, meant for stream `CLICKS`.
fn parse_ack(payload: &[u8]) -> Result<Ack, PublishError> {
    wire::parse_ack(payload, "clicks.a", "CLICKS")
}

#[test]
fn a_line_too_large_names_both_sizes_and_the_fix() {
    let e = PublishError::TooLarge {
        bytes: 2000,
        max: 1024,
    };
    let text = e.to_string();
    assert!(text.contains("2000 bytes"), "{text}");
    assert!(text.contains("max_payload 1024"), "{text}");
    assert!(text.contains("raise max_payload"), "{text}");
}

#[test]
fn acknowledgements_are_read_as_jetstream_sends_them() {
    let ack = parse_ack(br#"{"stream":"CLICKS","seq":42}"#).unwrap();
    assert_eq!(
        ack,
        Ack {
            seq: 42,
            duplicate: false
        }
    );
    let ack = parse_ack(br#"{"stream":"CLICKS","domain":"hub","seq":7,"duplicate":true}"#);
    assert_eq!(
        ack.unwrap(),
        Ack {
            seq: 7,
            duplicate: true
        }
    );
    let err =
        parse_ack(br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#)
            .unwrap_err();
    assert!(err.stream_missing(), "{err}");
    assert_eq!(
        err.to_string(),
        "the stream refused the message: stream not found (err_code 10059)"
    );
    let err = parse_ack(br#"{"error":{"code":503,"err_code":10077,"description":"x \"y\""}}"#)
        .unwrap_err();
    assert!(!err.stream_missing());
    assert!(err.to_string().contains(r#"x "y""#), "{err}");
    assert!(matches!(parse_ack(b"+OK"), Err(PublishError::Malformed(_))));
    // Another stream's acknowledgement, however written, is none of `CLICKS`'s.
    for other in [
        &br#"{"stream":"AUDIT","seq":42}"#[..],
        br#"{"stream":"AUDIT","domain":"hub","seq":7}"#,
    ] {
        let err = parse_ack(other).unwrap_err();
        assert!(matches!(err, PublishError::OtherStream { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "stream AUDIT acknowledged a click meant for stream CLICKS: it takes subject \
             clicks.a; take the subject out of AUDIT's subjects (shipping waits until then)"
        );
    }
}

#[test]
fn the_urls_user_and_password_or_token_are_decoded_and_never_shown() {
    let node = NodeId::parse("edge-a").unwrap();
    let target = |url: &str| {
        let clicks = Clicks {
            nats_url: url::Url::parse(url).unwrap(),
            ..Clicks::default()
        };
        NatsTarget::from_config(&clicks, &node)
    };
    let t = target("tls://clicks:p%40ss%3Aword@nats.example:4443");
    assert_eq!(
        t.auth,
        UrlAuth::UserPassword("clicks".into(), "p@ss:word".into())
    );
    assert_eq!(t.server(), "tls://nats.example:4443");
    assert_eq!(t.shown(), "tls://clicks:***@nats.example:4443");
    let t = target("nats://s3cr%2Ft@127.0.0.1");
    assert_eq!(t.auth, UrlAuth::Token("s3cr/t".into()));
    assert_eq!(t.server(), "nats://127.0.0.1");
    assert_eq!(t.shown(), "nats://***@127.0.0.1");
    let t = target("nats://[::1]:4222");
    assert_eq!(t.auth, UrlAuth::None);
    assert_eq!(
        (t.server(), t.shown()),
        ("nats://[::1]:4222".into(), "nats://[::1]:4222".into())
    );
}

#[test]
fn the_stream_subject_takes_every_node_and_the_subject_this_one() {
    let node = NodeId::parse("edge-a.eu").unwrap();
    let mut clicks = Clicks::default();
    let t = NatsTarget::from_config(&clicks, &node);
    assert_eq!(t.subject, "clicks.edge-a.eu");
    assert_eq!(t.stream_subject, "clicks.>");
    // Before the end `{node_id}` is one token: ids with dots are refused there (config).
    clicks.nats_subject = "acme.{node_id}.clicks".into();
    let t = NatsTarget::from_config(&clicks, &NodeId::parse("edge-b").unwrap());
    assert_eq!(t.subject, "acme.edge-b.clicks");
    assert_eq!(t.stream_subject, "acme.*.clicks");
    assert!(takes(&t.stream_subject, &t.subject));
    clicks.nats_subject = "clicks".into();
    assert_eq!(
        NatsTarget::from_config(&clicks, &node).stream_subject,
        "clicks"
    );
}

#[test]
fn a_stream_subject_takes_subjects_as_nats_matches_them() {
    for (pattern, subject) in [
        ("clicks.>", "clicks.edge-a"),
        ("clicks.>", "clicks.edge-a.eu"),
        ("clicks.*", "clicks.edge-a"),
        ("acme.*.clicks", "acme.edge-a.clicks"),
        ("clicks", "clicks"),
        (">", "clicks.edge-a"),
    ] {
        assert!(takes(pattern, subject), "{pattern} {subject}");
    }
    for (pattern, subject) in [
        ("other.>", "clicks.edge-a"),
        ("clicks.>", "clicks"),
        ("clicks.*", "clicks.edge-a.eu"),
        ("clicks.edge-b", "clicks.edge-a"),
        ("clicks", "clicks.edge-a"),
        ("clicks.edge-a.x", "clicks.edge-a"),
    ] {
        assert!(!takes(pattern, subject), "{pattern} {subject}");
    }
}

/// "No responders" is the first error an operator sees of a stream that does not take the
/// subject: it names the stream and the fix, not only the subject.
#[test]
fn no_responders_names_the_stream_and_the_fix() {
    let e = PublishError::NoStream {
        subject: "clicks.edge-a".into(),
        stream: "CLICKS".into(),
    };
    assert!(e.stream_missing());
    let text = e.to_string();
    assert!(text.contains("subject clicks.edge-a"), "{text}");
    assert!(text.contains("stream CLICKS"), "{text}");
    assert!(text.contains("add it to the stream's subjects"), "{text}");
}

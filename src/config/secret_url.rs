//! URLs that may hold a password or a token (`clicks.nats_url`, `tls.ask`): one that does not
//! parse is refused without repeating it, where the `url` crate's own message quotes the whole
//! value (the refusal reaches stderr, a client command's output, and on SIGHUP the log).

use serde::{Deserialize, Deserializer};

/// A URL (`#[serde(with = "secret_url")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    parse(&String::deserialize(d)?)
}

/// An optional URL (`#[serde(with = "secret_url::optional")]`).
pub mod optional {
    use super::{Deserialize, Deserializer, parse};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse(&s))
            .transpose()
    }
}

fn parse<E: serde::de::Error>(text: &str) -> Result<url::Url, E> {
    url::Url::parse(text).map_err(|e| {
        E::custom(format!(
            "not a URL: {e} (the value is not shown: it may hold a password; a '/', '?', '#' or \
             '@' in a user name or password is written %2F, %3F, %23 or %40)"
        ))
    })
}

//! `[admin]`: the admin listener's tokens (full and read-only), the host names it answers to (beyond addresses), and
//! whether the page's session cookie is `Secure`. This module parses; the admin listener applies.

use serde::Deserialize;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer token for the admin API. Default: generated once into `<data_dir>/admin-token`.
    pub token: Option<String>,
    /// A file holding the bearer token (a mounted secret), read at start; exclusive with
    /// `token`. Default none.
    pub token_file: Option<std::path::PathBuf>,
    /// Read-only bearer tokens (dashboards, support staff): they list and show domains and keys'
    /// ids, run a domain's checks and read the page, and change nothing (403). At least 16
    /// characters each. Default none.
    pub read_tokens: Vec<String>,
    /// A file of read-only tokens, one a line (a mounted secret), read at start; added to
    /// `read_tokens`. Default none.
    pub read_tokens_file: Option<std::path::PathBuf>,
    /// Host names the admin listener answers to, besides IP addresses (always answered) and
    /// `localhost` (answered when `listen.admin` is a loopback or unspecified address). A request
    /// whose `Host` names anything else gets 421, so a page on a rebound DNS name cannot read
    /// the API or `/metrics` through a browser. Default none.
    pub hosts: Vec<AdminHost>,
    /// Marks the `/ui/` session cookie `Secure`, for a page reached over HTTPS (through a
    /// TLS-terminating proxy in front of the admin listener). Default `false`.
    pub secure_cookie: bool,
}

/// Whether `token` (trimmed) can be an admin token: visible ASCII only, `!` to `~`, what a bearer
/// token is made of (RFC 6750). The admin listener reads the `Authorization` header only when it
/// is ASCII, so a token with a letter outside ASCII could never be presented; a space or a
/// control character would not survive being typed, pasted or trimmed either.
pub fn is_token_text(token: &str) -> bool {
    token.bytes().all(|b| matches!(b, b'!'..=b'~'))
}

/// What is wrong with a token [`is_token_text`] refuses, and what to write instead; said after
/// where the token is, never with the token itself.
pub const NOT_TOKEN_TEXT: &str = "has a character outside visible ASCII (! to ~: no spaces, no \
     letters outside ASCII), which no Authorization header can present: use letters, digits and \
     punctuation only (e.g. 64 hex digits)";

/// A host name in `admin.hosts`: lowercase, without a trailing dot and without a port (any port
/// is answered: the name is what DNS rebinding forges).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdminHost(String);

/// Why an `admin.hosts` entry is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminHostError {
    /// The entry is empty.
    #[error("admin.hosts has an empty name")]
    Empty,
    /// The entry has a port.
    #[error("admin.hosts entry {0:?} has a port; list the name alone (every port is answered)")]
    Port(String),
    /// The entry is not a host name.
    #[error(
        "admin.hosts entry {0:?} is not a host name (letters, digits, '-' and '.'); IP \
         addresses need no entry"
    )]
    NotAName(String),
}

impl AdminHost {
    /// Parses a host name as `admin.hosts` lists it (single-label names like `edge-admin` too).
    pub fn parse(input: &str) -> Result<AdminHost, AdminHostError> {
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(AdminHostError::Empty);
        }
        if name.contains(':') {
            return Err(AdminHostError::Port(input.to_owned()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(AdminHostError::NotAName(input.to_owned()));
        }
        Ok(AdminHost(name.to_ascii_lowercase()))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AdminHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        AdminHost::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_hosts_are_names_without_ports() {
        let ok = |s| AdminHost::parse(s).unwrap();
        assert_eq!(ok("Admin.Example.NET.").as_str(), "admin.example.net");
        assert_eq!(ok("edge-admin").as_str(), "edge-admin");
        assert_eq!(AdminHost::parse(""), Err(AdminHostError::Empty));
        assert!(matches!(
            AdminHost::parse("admin.example.net:9180"),
            Err(AdminHostError::Port(_))
        ));
        for bad in ["a b", "-a.example", "a..b", "*.example.com", "[::1]"] {
            assert!(AdminHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_outside_visible_ascii_are_refused_naming_the_key_not_the_token() {
        assert!(is_token_text("Abc-123_~!.:/+=0123456789"));
        for bad in [
            "tökén-0123456789abcdef",
            "two words 0123456789",
            "tab\t0123456789abcdef",
        ] {
            assert!(!is_token_text(bad), "{bad:?}");
        }
        let parse = |t: &str| super::super::Config::parse(t, std::path::Path::new("edge.toml"));
        for (config, key) in [
            (
                "[admin]\ntoken = \"tökén-0123456789abcdef\"\n",
                "admin.token ",
            ),
            (
                "[admin]\nread_tokens = [\"read-only-0123456789\", \"zwei wörter 0123456789\"]\n",
                "admin.read_tokens entry 2 ",
            ),
        ] {
            let err = parse(config).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{key}{NOT_TOKEN_TEXT}")) && err.contains("edge.toml"),
                "{err}"
            );
            assert!(!err.contains("ö"), "the token is not shown: {err}");
        }
    }

    #[test]
    fn admin_keys_parse_and_a_bad_host_names_the_key() {
        let parse = |t: &str| super::super::Config::parse(t, std::path::Path::new("edge.toml"));
        let a = parse("[admin]\nhosts = [\"admin.example.net\"]\nsecure_cookie = true\n")
            .unwrap()
            .admin;
        assert_eq!(
            a.hosts,
            vec![AdminHost::parse("admin.example.net").unwrap()]
        );
        assert!(a.secure_cookie);
        let d = parse("").unwrap().admin;
        assert!(d.hosts.is_empty() && !d.secure_cookie);
        let err = parse("[admin]\nhosts = [\"admin.example.net:9180\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.hosts") && err.contains("edge.toml"),
            "{err}"
        );
    }
}

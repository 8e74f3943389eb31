//! `[store]`: where domains, certificates and link keys are kept. SQLite under the data dir by
//! default; `url` points at a PostgreSQL database shared by the nodes of a cluster.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Which store keeps the edge's durable state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file, embedded: no server to run.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`store.url`), shared by the nodes of a cluster.
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `sqlite` or `postgres`. Default `postgres` when `url` is set, else `sqlite`.
    pub kind: Option<StoreKind>,
    /// The SQLite database file, created mode 0600 (it holds private keys). Default
    /// `<data_dir>/clickedge.db`.
    pub path: Option<PathBuf>,
    /// The PostgreSQL database, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=require]`;
    /// without a password in it, `PGPASSWORD` is used if set. Default none (SQLite).
    pub url: Option<StoreUrl>,
}

impl Store {
    /// The kind in use: `kind`, else `postgres` when `url` is set, else `sqlite`.
    pub fn kind(&self) -> StoreKind {
        self.kind.unwrap_or(if self.url.is_some() {
            StoreKind::Postgres
        } else {
            StoreKind::Sqlite
        })
    }

    /// What is inconsistent in the table, said so that it can be fixed.
    pub(super) fn invalid(&self) -> Option<String> {
        match (self.kind(), &self.path, &self.url) {
            (StoreKind::Postgres, None, None) => Some(
                "store.kind = \"postgres\" needs store.url, e.g. \
                 \"postgres://clickedge@127.0.0.1:5432/clickedge\""
                    .into(),
            ),
            (StoreKind::Postgres, Some(path), Some(url)) => Some(format!(
                "store.path ({}) is a SQLite file and store.url ({}) a PostgreSQL database: \
                 keep one",
                path.display(),
                url.redacted()
            )),
            (StoreKind::Postgres, Some(path), None) => Some(format!(
                "store.path ({}) is a SQLite file, but store.kind is \"postgres\": set store.url \
                 instead",
                path.display()
            )),
            (StoreKind::Sqlite, _, Some(url)) => Some(format!(
                "store.url ({}) is a PostgreSQL database, but store.kind is \"sqlite\": remove \
                 one of them",
                url.redacted()
            )),
            _ => None,
        }
    }
}

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`). It may carry a password, so
/// it is shown only [redacted](StoreUrl::redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(url::Url);

impl StoreUrl {
    /// Parses a `postgres://` or `postgresql://` URL with a host.
    pub fn parse(input: &str) -> Result<StoreUrl, String> {
        let url = url::Url::parse(input).map_err(|e| format!("store.url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none() {
            return Err(
                "store.url must look like \"postgres://USER@HOST:5432/DATABASE\"".to_owned(),
            );
        }
        Ok(StoreUrl(url))
    }

    /// The URL as written, password included: for the database driver only.
    pub fn secret(&self) -> &str {
        self.0.as_str()
    }

    /// True if the URL carries a password (in its user info or as a `password` parameter).
    pub fn has_password(&self) -> bool {
        self.0.password().is_some() || self.0.query_pairs().any(|(k, _)| k == "password")
    }

    /// The URL with any password replaced by `***`: for messages and logs.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // Setting a password fails only on URLs without a host, which parse refused.
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" { "***".into() } else { v };
                    (k.into_owned(), v.into_owned())
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoreUrl, D::Error> {
        let s = String::deserialize(d)?;
        StoreUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = StoreUrl::parse("postgres://edge:hunter2@db.internal:5432/clickedge").unwrap();
        assert!(url.has_password());
        assert_eq!(
            url.redacted(),
            "postgres://edge:***@db.internal:5432/clickedge"
        );
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        let url =
            StoreUrl::parse("postgresql://edge@db/c?password=hunter2&sslmode=require").unwrap();
        assert!(url.has_password());
        assert!(!url.redacted().contains("hunter2"), "{}", url.redacted());
        assert!(url.redacted().contains("sslmode=require"));
        let url = StoreUrl::parse("postgres://edge@db/c").unwrap();
        assert!(!url.has_password());
        assert_eq!(url.redacted(), "postgres://edge@db/c");
        assert!(StoreUrl::parse("mysql://edge@db/c").is_err());
        assert!(StoreUrl::parse("db:5432").is_err());
    }
}

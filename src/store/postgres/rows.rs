//! Rows as the PostgreSQL schema holds them: the associated data that binds each sealed secret
//! to its row, and the columns read back into the store's types.

use tokio_postgres::Row;

use crate::Domain;
use crate::store::StoreError;
use crate::store::sqlite::rows::DomainRow;

/// What a certificate's sealed private key is bound to: its domain.
pub(super) fn cert_binding(name: &str) -> String {
    format!("cert-key:{name}")
}

/// What a sealed small value is bound to: its key.
pub(super) fn kv_binding(key: &str) -> String {
    format!("kv:{key}")
}

/// What a link key's sealed secret is bound to: its id.
pub(super) fn link_key_binding(id: i32) -> String {
    format!("link-key:{id}")
}

/// A `domains` row selected with `DOMAIN_COLUMNS`, as the shared conversion takes it.
pub(super) fn domain_row(r: &Row) -> DomainRow {
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
    )
}

/// A stored name; one that is not a valid name means `column` was altered.
pub(super) fn parse_domain(name: &str, column: &'static str) -> Result<Domain, StoreError> {
    Domain::parse(name).map_err(|_| StoreError::Corrupt(column))
}

/// Opened bytes that must be text (a PEM key, a JSON value).
pub(super) fn utf8(bytes: Vec<u8>, column: &'static str) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(column))
}

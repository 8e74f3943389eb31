//! The PostgreSQL store: one database shared by the nodes of a cluster (`store.url`), behind the
//! same [`Store`] trait and conformance suite as SQLite.
//!
//! Secrets never reach the database in the clear: certificate private keys, small values (the
//! ACME account and its key) and link key secrets are sealed with the cluster's [`SealKey`],
//! each bound to its row (`cert-key:<domain>`, `kv:<key>`, `link-key:<id>`). A database dump
//! alone mints no link and impersonates no domain.
//!
//! This file is the [`Store`] trait over the concerns' own files: `domains` (domain rows),
//! `certs` (certificates, fenced writes), `keys` (link keys), `values` (kv and challenges),
//! `cluster` (leases and the shared order budget), `changes` (propagation, tombstone pruning,
//! nodes), `schema` (migrations), `connect` (pool, TLS) and `rows` (row bindings).
//!
//! Nothing here is on the request path; every call takes a pooled connection.

mod certs;
mod changes;
mod cluster;
mod connect;
mod domains;
mod keys;
mod rows;
mod schema;
mod values;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;

use super::{
    CertInfo, CertLifetime, CertPage, CertSummary, DomainRecord, Fence, IssueStatus, KeyChange,
    Lease, OrderRate, OrderTurn, StatusChange, Store, StoreError, StoredCert, StoredLinkKey,
};
use crate::Domain;
use crate::config::ChallengeKind;
use crate::seal::SealKey;
pub use connect::PASSWORD_ENV;
use connect::db;

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    listener: connect::Listener,
    seal: Arc<SealKey>,
    queries: prometheus::IntCounter,
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn queries(&self) -> prometheus::IntCounter {
        self.queries.clone()
    }

    async fn domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        self.read_domains().await
    }

    async fn domains_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        self.read_domains_after(after, limit).await
    }

    async fn listing_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(DomainRecord, Option<CertInfo>)>, StoreError> {
        self.read_listing_after(after, limit).await
    }

    async fn domain(&self, name: &Domain) -> Result<Option<DomainRecord>, StoreError> {
        self.read_domain(name).await
    }

    async fn add_domain(&self, name: &Domain, created_at: SystemTime) -> Result<bool, StoreError> {
        self.insert_domain(name, created_at).await
    }

    async fn add_approved_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.insert_approved_domain(name, created_at).await
    }

    async fn set_fallback_url(&self, name: &Domain, url: Option<&str>) -> Result<bool, StoreError> {
        self.write_fallback_url(name, url).await
    }

    async fn remove_domain(&self, name: &Domain) -> Result<bool, StoreError> {
        self.delete_domain(name).await
    }

    async fn set_status(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError> {
        self.write_status(name, status).await
    }

    async fn update_status(
        &self,
        name: &Domain,
        change: StatusChange,
    ) -> Result<Option<IssueStatus>, StoreError> {
        self.change_status(name, change).await
    }

    async fn certificate(&self, name: &Domain) -> Result<Option<StoredCert>, StoreError> {
        self.read_certificate(name).await
    }

    async fn certificate_info(&self, name: &Domain) -> Result<Option<CertInfo>, StoreError> {
        self.read_certificate_info(name).await
    }

    async fn put_certificate(&self, name: &Domain, cert: &StoredCert) -> Result<(), StoreError> {
        self.write_certificate(name, cert).await
    }

    async fn put_certificate_fenced(
        &self,
        name: &Domain,
        cert: &StoredCert,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        self.write_certificate_fenced(name, cert, fence).await
    }

    async fn cert_summary(
        &self,
        now: SystemTime,
        expiring_before: SystemTime,
    ) -> Result<CertSummary, StoreError> {
        self.summarise_certificates(now, expiring_before).await
    }

    async fn cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError> {
        self.read_cert_lifetimes().await
    }

    async fn certificates_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<CertPage, StoreError> {
        self.read_certificates_after(after, limit).await
    }

    async fn kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read_kv(key).await
    }

    async fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write_kv(key, value).await
    }

    async fn add_kv(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.insert_kv(key, value).await
    }

    async fn put_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.insert_challenge(kind, name, value, expires_at).await
    }

    async fn challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        self.read_challenge(kind, name, now).await
    }

    async fn remove_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_challenge(kind, name, now).await
    }

    async fn acquire_lease(
        &self,
        name: &Domain,
        holder: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let op = "acquiring lease";
        cluster::acquire(&*self.conn(op).await?, name.as_str(), holder, now, ttl)
            .await
            .map_err(db(op))
    }

    async fn extend_lease(
        &self,
        name: &Domain,
        fence: Fence,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let op = "extending lease";
        cluster::extend(&*self.conn(op).await?, name.as_str(), fence, now, ttl)
            .await
            .map_err(db(op))
    }

    async fn set_lease_order(
        &self,
        name: &Domain,
        fence: Fence,
        order_url: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let op = "keeping order with lease";
        cluster::set_order(&*self.conn(op).await?, name.as_str(), fence, order_url, now)
            .await
            .map_err(db(op))
    }

    async fn release_lease(&self, name: &Domain, fence: Fence) -> Result<bool, StoreError> {
        let op = "releasing lease";
        cluster::release(&*self.conn(op).await?, name.as_str(), fence)
            .await
            .map_err(db(op))
    }

    async fn take_order(
        &self,
        budget: &str,
        rate: OrderRate,
        now: SystemTime,
    ) -> Result<OrderTurn, StoreError> {
        let op = "taking from the order budget";
        cluster::take_order(&*self.conn(op).await?, budget, rate, now)
            .await
            .map_err(db(op))
    }

    async fn pause_orders(&self, budget: &str, until: SystemTime) -> Result<(), StoreError> {
        let op = "pausing orders";
        cluster::pause(&*self.conn(op).await?, budget, until)
            .await
            .map_err(db(op))
    }

    async fn link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError> {
        self.stored_link_keys().await
    }

    async fn add_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError> {
        self.insert_link_key(secret, created_at).await
    }

    async fn remove_link_key(&self, id: u16) -> Result<KeyChange, StoreError> {
        self.delete_link_key(id).await
    }

    async fn retire_link_key(&self, id: u16, at: SystemTime) -> Result<KeyChange, StoreError> {
        self.retire_key(id, at).await
    }

    async fn domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        self.read_domain_checks().await
    }

    async fn domain_checks_of(&self, name: &Domain) -> Result<Option<String>, StoreError> {
        self.read_domain_checks_of(name).await
    }

    async fn put_domain_checks(&self, name: &Domain, json: &str) -> Result<bool, StoreError> {
        self.write_domain_checks(name, json).await
    }
}

#[cfg(test)]
mod tests;

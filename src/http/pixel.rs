//! The open pixel (`/o/<token>`): the same 1×1 transparent GIF for any token, and for a pixel
//! token that opens an open line naming who fetched it ([`crate::clicks::opens`]), queued
//! without waiting. Nothing here blocks or does I/O.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use super::{Body, ConnInfo, Edge, request_host, same_name};
use crate::Domain;
use crate::clicks::verdict::{Class, Facts, VerdictStage};
use crate::links;

/// The open pixel's caching: none, by every cache's reading (CLICKS.md, "Rules of behaviour").
const PIXEL_CACHE: HeaderValue =
    HeaderValue::from_static("no-cache, no-store, must-revalidate, max-age=0");
/// A 1×1 transparent GIF (GIF89a, one-colour table, graphic control extension marking colour 0
/// transparent): 43 bytes.
const PIXEL_GIF: [u8; 43] = *b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
impl<V: VerdictStage> Edge<V> {
    /// An open pixel: the GIF, and for a pixel token that opens on the request's domain an open
    /// line, queued without waiting (whatever `clicks.durability`: the pixel never waits on the
    /// log and never answers anything but the GIF).
    pub(super) fn open<B: hyper::body::Body>(
        &self,
        conn: &ConnInfo,
        req: &Request<B>,
        token: &str,
    ) -> Response<Body> {
        let method = match *req.method() {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            _ => return super::close_unread(req, self.method_not_allowed(super::LINK_METHODS)),
        };
        let host = request_host(req);
        let domain = match &conn.sni {
            Some(sni) if host.is_none_or(|h| same_name(h, sni.as_str())) => Some(sni.clone()),
            Some(_) => None,
            None => host.and_then(|h| Domain::parse(h).ok()),
        };
        let link = domain
            .filter(|d| self.policy.is_registered(d.as_str()))
            .and_then(|d| {
                Some((
                    links::open_pixel(&self.keys.current(), d.as_str(), token).ok()?,
                    d,
                ))
            });
        if let Some((link, domain)) = link
            && self.clicks.admit(conn.peer.ip())
        {
            let mut event = self.event(conn, req, domain, link, method);
            let (class, verdict) = self.verdict.judge_open(&Facts {
                click: &event,
                headers: req.headers(),
                context: event.message.as_ref(),
            });
            // Only an open that may be a person's makes a later click's open not implied:
            // Apple's prefetch and scanners fetch whether or not anyone reads.
            let newly_seen = event
                .message
                .as_ref()
                .filter(|_| verdict.class != Class::Machine)
                .filter(|m| self.clicks.seen().open(event.domain.as_str(), &m.message))
                .map(|m| (event.domain.clone(), m.message.clone()));
            event.marked_seen = newly_seen.is_some();
            event.open = Some(class);
            event.verdict = Some(verdict);
            self.privacy.apply(&mut event);
            // `OpenClass::ALL` lists the variants in declaration order.
            self.counters.opens[class as usize].inc();
            // An open line refused (the queue full) must not keep the message seen opened: the
            // next click of a person on it then says the open (`implied_open`). The writer
            // does the same for one it drops.
            if !self.clicks.push(event)
                && let Some((domain, message)) = newly_seen
            {
                self.clicks.seen().forget(domain.as_str(), &message);
            }
        }
        super::close_unread(req, self.pixel())
    }

    /// An open pixel's answer: the same transparent GIF whatever the token, never cached, never
    /// a cookie. A HEAD gets its headers alone, its `content-length` included (`serve`'s
    /// `headers_only`).
    fn pixel(&self) -> Response<Body> {
        self.counters.pixel.inc();
        let mut res = Response::new(Body::new(Bytes::from_static(&PIXEL_GIF)));
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
        h.insert(header::CACHE_CONTROL, PIXEL_CACHE);
        res
    }
}

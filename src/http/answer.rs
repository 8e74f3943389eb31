//! Plain answers: text with its status, and `Connection: close` for an answer that leaves the
//! request's body unread.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::{Body, NO_STORE, TEXT};

/// `res`, to a request whose body is left unread, with `Connection: close` on HTTP/1.x: hyper
/// closes such a connection after the answer anyway, and a client told so does not send its
/// next request into a closing socket (RFC 9112 §9.6; RFC 9110 §15.5.9 for a 408).
pub(super) fn close_unread<B>(req: &Request<B>, mut res: Response<Body>) -> Response<Body>
where
    B: hyper::body::Body,
{
    let unread = !req.body().is_end_stream();
    if unread && req.version() < http::Version::HTTP_2 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

pub(super) fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    res.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    res
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    res.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    res
}

//! The optional bearer token on the gRPC services: servers check it, clients
//! attach it. Without a configured token both are no-ops.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Server side: refuses calls without the configured token.
#[derive(Debug, Clone, Default)]
pub struct RequireToken {
    expected: Option<Arc<str>>,
}

impl RequireToken {
    pub fn new(token: Option<String>) -> Self {
        Self {
            expected: token.map(Into::into),
        }
    }
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "this coordinator requires a bearer token (--token or SEEDLING_TOKEN)",
            )),
        }
    }
}

/// Client side: attaches the token, when there is one.
#[derive(Debug, Clone, Default)]
pub struct AttachToken {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl AttachToken {
    /// Fails when the token cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        let header = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the token must be printable ASCII"))
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(check: &mut RequireToken, attach: &mut AttachToken) -> Result<(), tonic::Code> {
        let request = attach.call(Request::new(())).unwrap();
        check.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn the_token_is_required_only_when_configured() {
        let mut open = RequireToken::new(None);
        let mut closed = RequireToken::new(Some("s3cret".into()));
        let mut none = AttachToken::new(None).unwrap();
        let mut right = AttachToken::new(Some("s3cret")).unwrap();
        let mut wrong = AttachToken::new(Some("guess")).unwrap();
        assert_eq!(call(&mut open, &mut none), Ok(()));
        assert_eq!(call(&mut closed, &mut right), Ok(()));
        assert_eq!(
            call(&mut closed, &mut none),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut closed, &mut wrong),
            Err(tonic::Code::Unauthenticated)
        );
        assert!(AttachToken::new(Some("bad\ntoken")).is_err());
    }
}

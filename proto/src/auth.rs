//! The optional bearer tokens on the gRPC services: servers check them,
//! clients attach one. Two roles: the operator's token does everything, a
//! read-only token may only look. Without a configured token the API is open
//! (a loopback cluster) and every caller may operate.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// What a caller's token lets it do; the server's interceptor records it
/// in each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Status, lists, lineage, exports.
    Read,
    /// Also submit and cancel plans, and stream results as a worker.
    Operate,
}

/// Refuses a call whose token may only read; `action` says what was tried.
pub fn require_operate<T>(request: &Request<T>, action: &str) -> Result<(), Status> {
    match request.extensions().get::<Role>() {
        Some(Role::Operate) => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "this token may only read; to {action} use the coordinator's operator token (coordinator.token)"
        ))),
    }
}

/// Server side: refuses calls without a configured token and records the
/// caller's role.
#[derive(Debug, Clone, Default)]
pub struct RequireToken {
    operate: Option<Arc<str>>,
    read: Option<Arc<str>>,
}

impl RequireToken {
    /// `read` alone would leave operating open; the config refuses that.
    pub fn new(operate: Option<String>, read: Option<String>) -> Self {
        Self {
            operate: operate.map(Into::into),
            read: read.map(Into::into),
        }
    }
}

/// A fresh secret (a token, a lease's secret): 128 bits from the OS, as hex.
pub fn fresh_secret() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS's random source");
    hex::encode(bytes)
}

/// Compares secrets without stopping at the first difference, so response
/// timing does not reveal how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(operate) = &self.operate else {
            request.extensions_mut().insert(Role::Operate);
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = |token: &str, expected: &Option<Arc<str>>| {
            expected
                .as_ref()
                .is_some_and(|e| same_secret(token.as_bytes(), e.as_bytes()))
        };
        match presented {
            Some(token) if same_secret(token.as_bytes(), operate.as_bytes()) => {
                request.extensions_mut().insert(Role::Operate);
                Ok(request)
            }
            Some(token) if matches(token, &self.read) => {
                request.extensions_mut().insert(Role::Read);
                Ok(request)
            }
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

    fn call(check: &mut RequireToken, attach: &mut AttachToken) -> Result<Role, tonic::Code> {
        let request = attach.call(Request::new(())).unwrap();
        check
            .call(request)
            .map(|r| *r.extensions().get::<Role>().unwrap())
            .map_err(|s| s.code())
    }

    #[test]
    fn the_token_is_required_only_when_configured() {
        let mut open = RequireToken::new(None, None);
        let mut closed = RequireToken::new(Some("s3cret".into()), None);
        let mut none = AttachToken::new(None).unwrap();
        let mut right = AttachToken::new(Some("s3cret")).unwrap();
        let mut wrong = AttachToken::new(Some("guess")).unwrap();
        assert_eq!(call(&mut open, &mut none), Ok(Role::Operate));
        assert_eq!(call(&mut closed, &mut right), Ok(Role::Operate));
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

    #[test]
    fn a_read_only_token_reads_and_is_told_it_cannot_operate() {
        let mut check = RequireToken::new(Some("operator".into()), Some("reader".into()));
        let mut reader = AttachToken::new(Some("reader")).unwrap();
        let mut operator = AttachToken::new(Some("operator")).unwrap();
        assert_eq!(call(&mut check, &mut reader), Ok(Role::Read));
        assert_eq!(call(&mut check, &mut operator), Ok(Role::Operate));

        let read = check.call(reader.call(Request::new(())).unwrap()).unwrap();
        let refused = require_operate(&read, "submit a plan").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("submit a plan"), "{refused:?}");
        let operating = check
            .call(operator.call(Request::new(())).unwrap())
            .unwrap();
        assert!(require_operate(&operating, "submit a plan").is_ok());
        // A request that never passed the interceptor has no role.
        assert!(require_operate(&Request::new(()), "cancel").is_err());
    }
}

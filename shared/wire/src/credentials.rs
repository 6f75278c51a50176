//! AWS credentials that the host hands the enclave with a sealed-model load, so that the enclave
//! can sign its own KMS requests (SigV4). An enclave has no IMDS; the parent passes credentials in
//! (`nitro-facts.md` §5). They let the enclave *call* KMS, but KMS only releases a data key wrapped
//! for the attested enclave key (`Recipient`), so the host holding them learns nothing it could
//! open a model with.
//!
//! The secret access key and the session token are wiped on drop and never printed.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::limits::{MAX_ACCESS_KEY_ID_LEN, MAX_SECRET_ACCESS_KEY_LEN, MAX_SESSION_TOKEN_LEN};
use crate::message::MessageError;

/// Temporary or long-term AWS credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    /// STS session token, present for temporary credentials (instance role, assumed role).
    pub session_token: Option<Zeroizing<String>>,
    /// When temporary credentials expire, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

impl AwsCredentials {
    /// Checks lengths and characters (the values end up in HTTP headers).
    pub fn validate(&self) -> Result<(), MessageError> {
        check(
            "access_key_id",
            &self.access_key_id,
            16,
            MAX_ACCESS_KEY_ID_LEN,
        )?;
        if !self
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(MessageError::InvalidCredentials);
        }
        check(
            "secret_access_key",
            &self.secret_access_key,
            1,
            MAX_SECRET_ACCESS_KEY_LEN,
        )?;
        if let Some(token) = &self.session_token {
            check("session_token", token, 1, MAX_SESSION_TOKEN_LEN)?;
        }
        Ok(())
    }
}

fn check(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), MessageError> {
    if value.len() < min || value.len() > max {
        return Err(MessageError::FieldLength {
            field,
            len: value.len(),
            min,
            max,
        });
    }
    // Header values: printable ASCII only, no CR/LF that could split a request.
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MessageError::InvalidCredentials);
    }
    Ok(())
}

// The access key id identifies, it does not authenticate (AWS prints it in errors and CloudTrail);
// the secret and the token are never printed.
impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE12345".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: Some(Zeroizing::new("TOKEN-SECRET-VALUE".into())),
            expires_at: Some(1_800_000_000),
        }
    }

    #[test]
    fn debug_never_shows_the_secret_or_token() {
        let s = format!("{:?}", creds());
        assert!(s.contains("AKIDEXAMPLE12345"));
        assert!(!s.contains("wJalr"));
        assert!(!s.contains("TOKEN-SECRET"));
    }

    #[test]
    fn validation_rejects_header_injection_and_bad_lengths() {
        assert!(creds().validate().is_ok());
        let mut c = creds();
        c.session_token = Some(Zeroizing::new("a\r\nx-evil: 1".into()));
        assert_eq!(c.validate(), Err(MessageError::InvalidCredentials));
        let mut c = creds();
        c.access_key_id = "SHORT".into();
        assert!(matches!(
            c.validate(),
            Err(MessageError::FieldLength { .. })
        ));
        let mut c = creds();
        c.access_key_id = "AKID/EXAMPLE12345".into();
        assert_eq!(c.validate(), Err(MessageError::InvalidCredentials));
        let mut c = creds();
        c.secret_access_key = Zeroizing::new(String::new());
        assert!(matches!(
            c.validate(),
            Err(MessageError::FieldLength { .. })
        ));
    }
}

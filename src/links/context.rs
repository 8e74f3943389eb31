//! Message context a link may carry, sealed in its token: which message the link belongs to, its
//! position among the message's links, when the message was sent, and the link's role. The edge
//! judges clicks with it (a burst across one message's links, every link clicked, a decoy hit)
//! without any lookup. Every part is optional but the message id, and a link may carry none.

/// Longest message id accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 128;
/// Most links a message may declare (`count`); a decoy's own count, which includes the decoy
/// after them, may be one more.
pub const MAX_LINKS_PER_MESSAGE: u32 = 1000;

/// What a link is for within its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An ordinary link in the body.
    Content,
    /// A link in the footer (social, address, preferences).
    Footer,
    /// The unsubscribe link.
    Unsubscribe,
    /// A confirmation (double opt-in, magic link).
    Confirm,
    /// A link no person sees: a hit is a machine.
    Decoy,
}

impl Role {
    /// Every role, in the order of their codes.
    pub const ALL: [Role; 5] = [
        Role::Content,
        Role::Footer,
        Role::Unsubscribe,
        Role::Confirm,
        Role::Decoy,
    ];

    /// The role's name in the API and the click log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Content => "content",
            Role::Footer => "footer",
            Role::Unsubscribe => "unsubscribe",
            Role::Confirm => "confirm",
            Role::Decoy => "decoy",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role's byte in the token.
    pub(super) fn code(self) -> u8 {
        self as u8
    }

    /// The role of byte `b` in the token.
    pub(super) fn from_code(b: u8) -> Option<Role> {
        Role::ALL.get(usize::from(b)).copied()
    }
}

/// The message context of a link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageContext {
    /// The sender's id of the message (1 to [`MAX_MESSAGE_LEN`] bytes).
    pub message: String,
    /// This link's position among the message's links, from 0.
    pub index: Option<u32>,
    /// How many links the message has.
    pub count: Option<u32>,
    /// When the message was sent, Unix seconds.
    pub sent_at: Option<u64>,
    /// What the link is for.
    pub role: Option<Role>,
}

/// Why a message context is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// The message id is empty or too long.
    #[error("message id must be 1-128 bytes, not {0}")]
    BadMessage(usize),
    /// `count` is 0 or over [`MAX_LINKS_PER_MESSAGE`] (one more for a decoy).
    #[error(
        "count {0} is out of range; a message has 1-1000 links (a decoy's count, which includes \
         the decoy, up to 1001)"
    )]
    BadCount(u32),
    /// `index` is not below `count`.
    #[error("index {index} is not below count {count} (indexes start at 0)")]
    IndexOutOfRange {
        /// The link's index.
        index: u32,
        /// The message's link count.
        count: u32,
    },
    /// Index, count, sent_at or role were given without a message id.
    #[error("index, count, sent_at and role need a message id")]
    NoMessage,
}

impl MessageContext {
    /// Checks the context's bounds.
    pub fn validate(&self) -> Result<(), ContextError> {
        if self.message.is_empty() || self.message.len() > MAX_MESSAGE_LEN {
            return Err(ContextError::BadMessage(self.message.len()));
        }
        if let Some(count) = self.count {
            // The decoy comes after the message's links and its count includes itself.
            let most = MAX_LINKS_PER_MESSAGE + u32::from(self.role == Some(Role::Decoy));
            if count == 0 || count > most {
                return Err(ContextError::BadCount(count));
            }
            if let Some(index) = self.index.filter(|i| *i >= count) {
                return Err(ContextError::IndexOutOfRange { index, count });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name_and_code() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        assert_eq!(Role::parse("hidden"), None);
        assert_eq!(Role::from_code(5), None);
    }

    #[test]
    fn bounds_are_checked() {
        let ok = MessageContext {
            message: "m-1".into(),
            index: Some(2),
            count: Some(3),
            ..MessageContext::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut MessageContext)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.message.clear()), ContextError::BadMessage(0));
        assert_eq!(bad(|c| c.count = Some(0)), ContextError::BadCount(0));
        assert_eq!(bad(|c| c.count = Some(1001)), ContextError::BadCount(1001));
        // After a message's 1000 links, its decoy counts itself too.
        let decoy = MessageContext {
            index: Some(1000),
            count: Some(1001),
            role: Some(Role::Decoy),
            ..ok.clone()
        };
        assert_eq!(decoy.validate(), Ok(()));
        assert_eq!(
            MessageContext {
                count: Some(1002),
                ..decoy
            }
            .validate(),
            Err(ContextError::BadCount(1002))
        );
        assert_eq!(
            bad(|c| c.index = Some(3)),
            ContextError::IndexOutOfRange { index: 3, count: 3 }
        );
    }
}

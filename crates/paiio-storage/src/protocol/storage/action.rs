//! The `Action` query parameter of Storage API V2 calls (docs/storage-api.md §6).

use crate::error::ObjectKind;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident,)*) => {
        /// A Storage API V2 call: `POST /api/storage/v2?Action=<name>&Target=...`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The name on the wire (`TableCreateReadSession`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => stringify!($variant),)*
                }
            }
        }

        impl std::str::FromStr for Action {
            type Err = UnknownAction;
            /// The exact (case-sensitive) name, as the service reads it.
            fn from_str(s: &str) -> Result<Self, UnknownAction> {
                match s {
                    $(stringify!($variant) => Ok(Action::$variant),)*
                    other => Err(UnknownAction(other.to_string())),
                }
            }
        }
    };
}

actions! {
    TableCreateReadSession,
    TableGetReadSession,
    TableRead,
    TablePreview,
    TableCreateWriteSession,
    TableGetWriteSession,
    TableCreateWriteStream,
    TableGetWriteStream,
    TableWrite,
    TableCloseWriteStream,
    TableCommitWriteSession,
    TableAbortWriteSession,
    /// The table's write schema (with a `SessionId`, that session's).
    TableGetWriteSchema,
    TableWriteBlob,
    BlobRead,
}

impl Action {
    /// The kind of session the action works on, to name a session an error answer does not.
    pub fn session_kind(self) -> ObjectKind {
        match self {
            Action::TableCreateReadSession
            | Action::TableGetReadSession
            | Action::TableRead
            | Action::TablePreview => ObjectKind::ReadSession,
            _ => ObjectKind::WriteSession,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `Action` this protocol does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl std::fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown Action {:?}", self.0)
    }
}

impl std::error::Error for UnknownAction {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
        }
        assert_eq!(
            "tableread".parse::<Action>().unwrap_err().to_string(),
            "unknown Action \"tableread\""
        );
    }
}

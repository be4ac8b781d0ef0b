//! The backend-independent conformance suite.

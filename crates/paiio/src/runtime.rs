//! The process-wide I/O runtime.

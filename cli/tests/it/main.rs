//! End-to-end tests of the `bitstratus` binary against the real server, in-process: each test
//! starts `backend::app` on a 127.0.0.1:0 listener in a background thread and runs the built
//! binary with its own temporary configuration directory.

mod common;
mod manage;
mod resume;
mod transfer;

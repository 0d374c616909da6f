//! The backend's integration tests, one binary: `app(state)` over a real SQLite file
//! database and real local object storage in a tempdir, plus a real socket for HTTP framing
//! and, in `s3`, a real S3 server (`s3s-fs`) for the S3 backend.

mod common;
mod download;
mod gc;
mod http;
mod manage;
mod openapi;
mod s3;
mod throttle;
mod upload;
mod visibility;
mod web;

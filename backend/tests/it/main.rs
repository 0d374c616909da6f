//! The backend's integration tests, one binary: `app(state)` over a real SQLite file
//! database and real local object storage in a tempdir, plus a real socket for HTTP framing.

mod common;
mod download;
mod gc;
mod http;
mod manage;
mod upload;
mod visibility;
mod web;

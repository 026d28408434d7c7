//! End-to-end tests: the real daemon and CLI against a throwaway PostgreSQL
//! cluster and real GnuPG. Run through the README's test command, which
//! builds the binaries first and installs PostgreSQL and GnuPG.

mod harness;

mod adversarial;
mod drill;
mod fail_closed;
mod faults;
mod format;
mod lifecycle;
mod observability;
mod offsite;
mod offsite_queue;
mod offsite_stream;
mod operations;
mod python_client;
mod recovery;
mod requests;
mod restore_box;
mod roundtrip;
mod runs_kept;
mod soak;
mod systemd;

//! A PostgreSQL outage under servers sharing one log (private instance): see the tests below.

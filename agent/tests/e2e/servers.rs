//! Several servers on one PostgreSQL log, with agents failing over between them.

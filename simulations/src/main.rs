//! `tessera-sim`: run a scenario, replay a log (being written in this change).

fn main() {}

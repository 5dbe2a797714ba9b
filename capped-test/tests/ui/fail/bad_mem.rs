use capped_test::capped;

#[capped(mem = "lots")]
fn lots() {}

#[capped(mem = "3 parsecs")]
fn unknown_unit() {}

fn main() {}

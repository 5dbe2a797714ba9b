use capped_test::capped;

#[capped(group = "GPU", threads = 0, mem = "lots", timeout = "soon", bogus)]
fn everything_wrong() {}

fn main() {}

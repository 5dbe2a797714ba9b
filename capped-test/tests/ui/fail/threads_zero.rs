use capped_test::capped;

#[capped(threads = 0)]
fn zero_threads() {}

fn main() {}

use capped_test::capped;

#[capped(timeout = "soon")]
fn soon() {}

#[capped(timeout = "0s")]
fn zero() {}

fn main() {}

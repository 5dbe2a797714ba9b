use capped_test::capped;

#[capped]
struct NotATest;

#[capped]
const fn const_fn() {}

#[capped]
unsafe fn unsafe_fn() {}

fn main() {}

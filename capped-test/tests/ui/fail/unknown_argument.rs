use capped_test::capped;

#[capped(gpus = 1)]
fn unknown() {}

#[capped(thread = 2)]
fn close_to_threads() {}

#[capped(memory = "1GiB")]
fn alias_of_mem() {}

fn main() {}

use capped_test::capped;

#[capped(threads = "2")]
fn threads_as_string() {}

#[capped(mem = 1024)]
fn mem_as_number() {}

#[capped(timeout = 30s)]
fn timeout_unquoted() {}

#[capped(serial = true)]
fn serial_with_value() {}

#[capped(groups = "gpu")]
fn groups_not_a_list() {}

#[capped(group)]
fn group_without_value() {}

fn main() {}

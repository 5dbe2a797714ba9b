use capped_test::capped;

#[capped]
#[should_panic(expect = "boom")]
fn misspelled_expected() {}

#[capped]
#[ignore(reason)]
fn ignore_with_parens() {}

#[capped]
#[ignore]
#[ignore = "twice"]
fn ignored_twice() {}

fn main() {}

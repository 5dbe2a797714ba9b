//! Without libtest (a `harness = false` target, or here a plain binary) rustc drops the
//! `#[test]` wrappers, but every test is still registered with its spec and its body: that
//! is how harness mode finds them.

use capped_test::__private::{Registration, ShouldPanic, inventory};
use capped_test::capped;

#[capped(group = "attrtest-gpu", threads = 2)]
fn sync_test() {}

#[capped(timeout = "5s")]
async fn async_test() -> Result<(), String> {
    tokio::task::yield_now().await;
    Ok(())
}

#[capped]
#[should_panic(expected = "boom")]
fn panics() {
    panic!("boom");
}

#[capped]
#[ignore = "not now"]
fn ignored() {}

#[capped]
#[cfg(any())]
fn configured_out() {}

mod inner {
    use capped_test::capped;

    #[capped(serial)]
    fn sync_test() {}
}

fn main() {
    let registrations: Vec<&Registration> = inventory::iter::<Registration>.into_iter().collect();
    let mut names: Vec<String> = registrations.iter().map(|r| r.spec.name()).collect();
    names.sort();
    assert_eq!(names, ["async_test", "ignored", "inner::sync_test", "panics", "sync_test"]);

    for registration in registrations {
        let spec = registration.spec;
        match spec.name().as_str() {
            "sync_test" => {
                assert_eq!(spec.groups, ["attrtest-gpu"]);
                assert_eq!(spec.threads, 2);
            }
            "async_test" => assert!(spec.is_async),
            "panics" => {
                assert_eq!(spec.should_panic, ShouldPanic::YesWithMessage("boom"));
                let run = registration.run;
                assert!(std::panic::catch_unwind(run).is_err());
                continue;
            }
            "ignored" => assert_eq!(spec.ignore, Some(Some("not now"))),
            "inner::sync_test" => assert!(spec.serial),
            other => panic!("unexpected test {other}"),
        }
        assert_eq!((registration.run)(), Ok(()), "{}", spec.name());
    }
}

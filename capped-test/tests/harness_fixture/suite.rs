// The fixture suite, included by `harness_fixture/main.rs` (harness = false, run by the
// capped harness) and by `harness_fixture_libtest.rs` (run by libtest), so the same tests
// can be compared under both harnesses. Every test passes quickly when none of the
// `HARNESS_FIXTURE_*` variables is set, so both targets also pass under `cargo test`.
//
// * `HARNESS_FIXTURE_UNIT_MS`: the time unit of the mixed suite (0 when unset): gpu tests
//   take 3 units, light tests 2.
// * `HARNESS_FIXTURE_LOG`: a file each test appends `NAME start|end MICROS` lines to.
// * `HARNESS_FIXTURE_FAIL=1`: the `*_on_request` tests fail.
// * `HARNESS_FIXTURE_HANG=1`: `misc::hangs_on_request` sleeps a minute (its timeout is 1s).

#[allow(dead_code)]
mod fixture {
    use std::io::Write;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// The time unit of the mixed suite.
    pub fn unit() -> Duration {
        let ms = std::env::var("HARNESS_FIXTURE_UNIT_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        Duration::from_millis(ms)
    }

    /// Appends `NAME WHAT` to the log, if one is asked for (one `write`, so lines from
    /// several threads and processes never mix).
    pub fn record(what: &str) {
        let Ok(path) = std::env::var("HARNESS_FIXTURE_LOG") else {
            return;
        };
        let name = capped_test::current_test().expect("inside a #[capped] test");
        let line = format!("{name} {what}\n");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .expect("the fixture log is writable");
    }

    fn now_us() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros()
    }

    /// Records the start, sleeps `units`, records the end.
    pub fn work(units: u32) {
        record(&format!("start {}", now_us()));
        std::thread::sleep(unit() * units);
        record(&format!("end {}", now_us()));
    }

    /// Whether `HARNESS_FIXTURE_<what>=1`.
    pub fn asked(what: &str) -> bool {
        std::env::var(format!("HARNESS_FIXTURE_{what}")).as_deref() == Ok("1")
    }
}

/// A suite whose best schedule is known, to measure the scheduler against: with width 2, 3 gpu tests of 3 units and 6 light tests of 2 units
/// take 11 units at best.
mod mixed {
    use super::fixture::work;
    use capped_test::capped;

    #[capped(group = "harness-gpu")]
    fn gpu_a() {
        work(3);
    }

    #[capped(group = "harness-gpu")]
    fn gpu_b() {
        work(3);
    }

    #[capped(group = "harness-gpu")]
    fn gpu_c() {
        work(3);
    }

    #[capped]
    fn light_1() {
        work(2);
    }

    #[capped]
    fn light_2() {
        work(2);
    }

    #[capped]
    fn light_3() {
        work(2);
    }

    #[capped]
    fn light_4() {
        work(2);
    }

    #[capped]
    fn light_5() {
        work(2);
    }

    #[capped]
    fn light_6() {
        work(2);
    }
}

/// Every other form of test.
mod misc {
    use super::fixture::{asked, record, work};
    use capped_test::capped;
    use std::time::Duration;

    #[capped]
    fn passes() {}

    #[capped]
    #[ignore]
    fn ignored_plain() {}

    #[capped]
    #[ignore = "needs a reason"]
    fn ignored_with_reason() {}

    #[capped]
    #[should_panic(expected = "boom")]
    fn panics_as_expected() {
        panic!("it went boom");
    }

    #[capped]
    #[should_panic]
    fn should_panic_unless_asked() {
        if !asked("FAIL") {
            panic!("as expected");
        }
    }

    #[capped]
    fn returns_an_error_on_request() -> Result<(), String> {
        if asked("FAIL") {
            return Err("asked to return an error".to_string());
        }
        Ok(())
    }

    #[capped]
    fn fails_on_request() {
        if asked("FAIL") {
            panic!("asked to fail");
        }
    }

    #[capped]
    async fn runs_async() {
        tokio::task::yield_now().await;
    }

    #[capped(timeout = "1s")]
    fn hangs_on_request() {
        if asked("HANG") {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    #[capped]
    fn knows_its_name_and_seed() {
        assert_eq!(
            capped_test::current_test().as_deref(),
            Some("misc::knows_its_name_and_seed")
        );
        assert_eq!(
            std::thread::current().name(),
            Some("misc::knows_its_name_and_seed")
        );
        record(&format!("seed {}", capped_test::seed()));
    }

    #[capped(group = "harness-gpu")]
    fn holds_the_gpu_slot() {
        assert_eq!(capped_test::slot("harness-gpu"), Some(0));
    }

    #[capped(serial)]
    fn runs_alone() {
        work(2);
    }
}

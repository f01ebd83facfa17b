//! `builtin/noop` sits on the hot path of the throughput benchmark: an
//! attempt must cost one allocation (the boxed future of the `Executor`
//! trait) and nothing more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::task::{Context, Poll, Waker};

use symphony::executor::{AttemptContext, ExecutorConfig, Executors};
use symphony::value::Value;

/// Counts the allocations of the current thread, so that other tests running
/// in parallel do not disturb the count.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn noop_allocates_only_its_future() {
    let executors = Executors::standard(&ExecutorConfig::default());
    let noop = executors.resolve("builtin/noop").unwrap().clone();
    let ctx = AttemptContext {
        run_id: "r".into(),
        task_id: "t".into(),
        item: None,
        attempt: 1,
        idempotency_key: "r/t".into(),
        uses: "builtin/noop".into(),
    };
    let mut cx = Context::from_waker(Waker::noop());

    const ATTEMPTS: usize = 1000;
    let before = allocations();
    for _ in 0..ATTEMPTS {
        let mut attempt = noop.execute(&ctx, Value::Null);
        let out = attempt.as_mut().poll(&mut cx);
        assert!(matches!(out, Poll::Ready(Ok(Value::Null))));
    }
    assert_eq!(allocations() - before, ATTEMPTS);
}

//! The header and the C examples, as a C user meets them: the committed header is what the build
//! generates and compiles cleanly as C99 and C++17; every example builds with -Werror and runs to
//! its OK line. (The test script also runs them under valgrind: `make -C c-examples valgrind`.)

mod common;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    // cargo puts target/debug before target/debug/deps on LD_LIBRARY_PATH, which wins over the
    // programs' RUNPATH: a libdirectmem.so left there by an earlier `cargo build` would be tested
    // instead of this build's.
    cmd.env_remove("LD_LIBRARY_PATH");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

#[test]
fn committed_header_is_what_the_build_generates() {
    // build.rs regenerated include/directmem.h before this test was compiled: any difference from
    // the committed file means the C ABI changed without the header being committed.
    let root = common::project_dir();
    if !root.join(".git").exists() {
        panic!("not a git checkout: cannot compare include/directmem.h with the committed one");
    }
    run(Command::new("git").current_dir(&root).args(["diff", "--exit-code", "--", "include/directmem.h"]));
}

#[test]
fn header_compiles_alone_as_strict_c99_and_cpp17() {
    let root = common::project_dir();
    let dir = std::env::temp_dir().join(format!("directmem-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("only_header.c");
    std::fs::write(&src, "#include \"directmem.h\"\nint main(void) { return (int)DM_OK; }\n").unwrap();
    let include = format!("-I{}", root.join("include").display());
    run(Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", &include, "-c", "-o"])
        .arg(dir.join("c.o"))
        .arg(&src));
    run(Command::new("g++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", &include, "-x", "c++", "-c", "-o"])
        .arg(dir.join("cpp.o"))
        .arg(&src));
    // C++ sees the functions with C linkage (extern "C" guards): linking against the library works.
    let main = dir.join("link.cpp");
    std::fs::write(
        &main,
        "#include \"directmem.h\"\nint main() { dm_stats s; return dm_get_stats(&s) == DM_OK ? 0 : 1; }\n",
    )
    .unwrap();
    let lib = common::library_dir();
    run(Command::new("g++")
        .args(["-std=c++17", "-Werror", &include, "-o"])
        .arg(dir.join("link"))
        .arg(&main)
        .arg(format!("-L{}", lib.display()))
        .arg("-ldirectmem")
        .arg(format!("-Wl,-rpath,{}", lib.display())));
    run(&mut Command::new(dir.join("link")));
}

/// The header declares the library's functions and nothing of anyone else's: each function it
/// declares is one the library exports, named `dm_` (a declaration of a libc function slipped in
/// once, from the C door's source), each `dm_` function the library exports is declared, and each
/// macro it defines is named `DM_` (or is its include guard).
#[test]
fn header_declares_exactly_the_librarys_functions() {
    let root = common::project_dir();
    let dir = std::env::temp_dir().join(format!("directmem-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let include = format!("-I{}", root.join("include").display());
    let src = dir.join("names.c");
    std::fs::write(&src, "#include \"directmem.h\"\n").unwrap();
    // gcc's -aux-info writes a prototype per declared function, with the file it came from.
    let info = dir.join("prototypes.txt");
    run(Command::new("gcc")
        .arg(&include)
        .arg("-aux-info")
        .arg(&info)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("names.o")));
    let prototypes = std::fs::read_to_string(&info).unwrap();
    let mut declared: Vec<String> = prototypes
        .lines()
        .filter(|line| line.contains("directmem.h:"))
        .map(|line| {
            let before_args = &line[..line.rfind(" (").unwrap_or_else(|| panic!("not a prototype: {line}"))];
            before_args.rsplit([' ', '*']).next().unwrap().to_string()
        })
        .collect();
    declared.sort();
    assert!(declared.len() >= 19, "too few prototypes found: {declared:?}");
    for name in &declared {
        assert!(name.starts_with("dm_"), "include/directmem.h declares `{name}`, not one of the library's functions");
    }
    let symbols =
        run(Command::new("nm").args(["-D", "--defined-only"]).arg(common::library_dir().join("libdirectmem.so")));
    let mut exported: Vec<String> = symbols
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|name| name.starts_with("dm_"))
        .map(str::to_string)
        .collect();
    exported.sort();
    assert_eq!(declared, exported, "the header's functions and the library's exported dm_ functions differ");
    // Macros: what the header defines beyond what its own #includes do.
    let macros = |file: &str| {
        std::fs::write(&src, file).unwrap();
        let out = run(Command::new("gcc").arg(&include).args(["-dM", "-E"]).arg(&src));
        out.lines().filter_map(|l| l.split_whitespace().nth(1)).map(str::to_string).collect::<Vec<_>>()
    };
    let system = macros("#include <stddef.h>\n#include <stdint.h>\n");
    for name in macros("#include \"directmem.h\"\n").iter().filter(|m| !system.contains(m)) {
        assert!(name.starts_with("DM_") || name == "DIRECTMEM_H", "include/directmem.h defines the macro `{name}`");
    }
}

fn build_examples() -> std::path::PathBuf {
    let build = std::env::temp_dir().join(format!("directmem-examples-{}", std::process::id()));
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(common::project_dir().join("c-examples"))
        .arg(format!("LIBDIR={}", common::library_dir().display()))
        .arg(format!("BUILD={}", build.display())));
    build
}

const EXAMPLES: [&str; 5] = ["alloc_stats", "cleaners", "reclaim_cache", "threads", "cpp_containers"];

#[test]
fn every_c_example_builds_and_runs_to_ok() {
    let build = build_examples();
    for name in EXAMPLES {
        let out = run(&mut Command::new(build.join(name)));
        assert!(out.contains(&format!("{name}: OK")), "{name} printed:\n{out}");
    }
    let cache = run(&mut Command::new(build.join("reclaim_cache")));
    assert!(cache.contains("16 live, 84 evicted by the hook"), "{cache}");
    let threads = run(&mut Command::new(build.join("threads")));
    assert!(threads.contains("800 allocations, 0 limit failures"), "{threads}");
}

/// The programs of tests/c (its Makefile's PROGRAMS), each printing "<name>: OK" at its end.
const C_TEST_PROGRAMS: [&str; 21] = [
    "abuse",
    "races",
    "quota_hooks",
    "fork",
    "cpp_layer17",
    "cpp_layer20",
    "sqlite_alloc",
    "memory_reuse",
    "realloc_cleaners",
    "realloc_races",
    "all_at_once",
    "dlopen_threads",
    "load_registration",
    "zeroing",
    "thread_end",
    "cancel",
    "out_of_memory",
    "ended_slabs",
    "small_stacks",
    "locked_memory",
    "map_count",
];

fn make_c_test_programs(target: &str, build: &std::path::Path) {
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(common::project_dir().join("tests/c"))
        .arg(format!("LIBDIR={}", common::library_dir().display()))
        .arg(format!("BUILD={}", build.display()))
        .arg(target));
}

fn assert_printed_ok(name: &str, out: &str) {
    let program = name.trim_end_matches(char::is_numeric);
    assert!(out.contains(&format!("{program}: OK")), "{name} printed:\n{out}");
}

/// Builds the C test programs in `build` and runs each, through `launcher` if given.
fn run_c_test_programs(build: &std::path::Path, launcher: Option<&std::path::Path>) {
    make_c_test_programs("all", build);
    for name in C_TEST_PROGRAMS {
        let mut program = match launcher {
            Some(launcher) => {
                let mut command = Command::new(launcher);
                command.arg(build.join(name));
                command
            }
            None => Command::new(build.join(name)),
        };
        if name == "small_stacks" && cfg!(debug_assertions) {
            // Unoptimised, the library's first call takes ~23 KiB of stack where the release
            // build's takes ~5: scripts/test.sh runs the release build on PTHREAD_STACK_MIN.
            program.env("DM_TEST_STACK", "65536");
        }
        assert_printed_ok(name, &run(&mut program));
    }
}

/// The C test programs in tests/c: misuse (abuse) and races (races). The test script runs them
/// under valgrind as well.
#[test]
fn c_test_programs_hold_up_to_misuse_and_races() {
    run_c_test_programs(&std::env::temp_dir().join(format!("directmem-ctests-{}", std::process::id())), None);
}

/// The same programs where every `membarrier` call fails (tests/c/no_membarrier.c, a seccomp
/// filter), as on kernels before 4.14 or under such a filter: the library's fallback. Until
/// `dm_trim` and `dm_decay` visited other threads' heaps there too, `memory_reuse` failed (a busy
/// thread's emptied slabs stayed in memory).
#[test]
fn c_test_programs_run_without_membarrier() {
    let build = std::env::temp_dir().join(format!("directmem-no-membarrier-{}", std::process::id()));
    let launcher = build.join("no_membarrier");
    make_c_test_programs(launcher.to_str().unwrap(), &build);
    run_c_test_programs(&build, Some(&launcher));
}

/// The same programs built with AddressSanitizer and its leak check, as a C user tests their
/// own program (all but five, see tests/c/Makefile). The library's own memory once came from
/// `__libc_memalign`, which the sanitizer replaces, and went back to glibc's `__libc_free`: every
/// program reported the library's blocks as leaked, and `races` aborted in glibc's `free`.
#[test]
fn c_test_programs_run_under_address_sanitizer() {
    let build = std::env::temp_dir().join(format!("directmem-asan-{}", std::process::id()));
    make_c_test_programs("asan", &build);
    let not_built = ["fork", "out_of_memory", "small_stacks", "locked_memory", "map_count"];
    for name in C_TEST_PROGRAMS.iter().filter(|name| !not_built.contains(name)) {
        let out = run(Command::new(build.join("asan").join(name))
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23"));
        assert_printed_ok(name, &out);
    }
}

/// The C benchmark (benches/c/pairs.c) keeps building and running: a short round of every case,
/// which must print its table and end with no block left.
#[test]
fn c_benchmark_builds_and_runs_quickly() {
    let root = common::project_dir();
    let lib = common::library_dir();
    let exe = std::env::temp_dir().join(format!("directmem-pairs-{}", std::process::id()));
    run(Command::new("gcc")
        .args(["-O2", "-pthread", "-Wall", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join("benches/c/pairs.c"))
        .arg(format!("-L{}", lib.display()))
        .arg("-ldirectmem")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe));
    let out = run(Command::new(&exe).arg("quick"));
    assert_eq!(out.lines().filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |")).count(), 6, "{out}");
}

/// Whole programs with directmem as their malloc (tests/c/malloc_shim.c, preloaded): Python with
/// every object on it (tests/c/whole_program.py: threads, fork() while they run, fork and exec,
/// zlib, SQLite, JSON), sort, gzip, and gcc compiling a file (its driver, cc1 and the assembler). Each
/// must print or write exactly what it does on glibc's malloc, and directmem must have served
/// their blocks: each process reports how many.
#[test]
fn whole_programs_run_with_directmem_as_their_malloc() {
    let root = common::project_dir();
    let build = std::env::temp_dir().join(format!("directmem-shim-{}", std::process::id()));
    run(Command::new("make")
        .args(["-s", "-C"])
        .arg(root.join("tests/c"))
        .arg("shim")
        .arg(format!("LIBDIR={}", common::library_dir().display()))
        .arg(format!("BUILD={}", build.display())));
    let report = build.join("report.txt");
    let _ = std::fs::remove_file(&report);
    let stdout = |cmd: &mut Command, on_directmem: bool| {
        if on_directmem {
            cmd.env("LD_PRELOAD", build.join("libdm_malloc.so")).env("DM_MALLOC_REPORT", &report);
        }
        cmd.env_remove("LD_LIBRARY_PATH");
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    let python = |on| {
        stdout(Command::new("python3").arg(root.join("tests/c/whole_program.py")).env("PYTHONMALLOC", "malloc"), on)
    };
    let expected = python(false);
    assert_eq!(python(true), expected);
    // Again with the library's own decay thread visiting the heaps every millisecond: a call this
    // malloc does not see. Its bookkeeping, taken while it holds the heaps' doors, must not come
    // back here (before `src/own_heap.rs` it did, and the program hung for good); `timeout` makes
    // such a hang a failure (exit status 124). Only Python gets the variable: `timeout` itself runs
    // on directmem too.
    let decaying = stdout(
        Command::new("timeout")
            .args(["-k", "10", "300", "env", "DM_BACKGROUND_DECAY_MS=1", "python3"])
            .arg(root.join("tests/c/whole_program.py"))
            .env("PYTHONMALLOC", "malloc"),
        true,
    );
    assert_eq!(decaying, expected);

    let numbers = build.join("numbers.txt");
    let mut state = 1u64;
    let lines: Vec<String> = (0..200_000)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 20).to_string()
        })
        .collect();
    std::fs::write(&numbers, lines.join("\n") + "\n").unwrap();
    let sort = |on| stdout(Command::new("sort").arg("-n").arg(&numbers), on);
    assert_eq!(sort(true), sort(false));
    // gzip allocates nothing: the report's call is the library's first, at the program's end.
    let gzip = |on| stdout(Command::new("gzip").arg("-c").arg(&numbers), on);
    assert_eq!(gzip(true), gzip(false));

    let object = |on: bool| {
        let out = build.join(format!("pairs-{on}.o"));
        stdout(
            Command::new("gcc")
                .args(["-O2", "-c"])
                .arg(format!("-I{}", root.join("include").display()))
                .arg(root.join("benches/c/pairs.c"))
                .arg("-o")
                .arg(&out),
            on,
        );
        std::fs::read(out).unwrap()
    };
    assert!(object(true) == object(false), "gcc wrote another object file on directmem");

    let served: Vec<u64> = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("dm_malloc: ")?.split(' ').next()?.parse().ok())
        .collect();
    assert!(served.len() >= 7, "a report from each process at least: {served:?}");
    assert!(served.iter().any(|&n| n > 1_000_000), "Python's blocks came from directmem: {served:?}");
    assert!(served.iter().filter(|&&n| n > 10_000).count() >= 2, "and cc1's: {served:?}");
}

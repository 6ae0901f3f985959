//! The native half of `dev.directmem.Native` (Java API: `dev.directmem.DirectMemory`).
//!
//! Thin like the C ABI: each native method calls the same [`Manager`](crate::manager) and returns a
//! status or value; the Java side turns statuses into exceptions, so messages live in one place.
//! Every method runs inside one of two wrappers that catch panics: `in_java` (jni-rs's
//! `EnvUnowned::with_env`: a panic or JNI failure becomes a `RuntimeException`) for the methods off
//! the hot path, `without_env` (a panic becomes a status) for the allocation path, where jni-rs's
//! wrapper would cost ~45 ns a call. Never a crash of the JVM.
//!
//! The reclaim hook is the one path that enters Java from native code: it may run on a thread the
//! JVM has never seen (a C thread allocating in the same process), which is attached as a daemon so
//! it never keeps the JVM from exiting. It uses the raw invocation interface for that, because
//! jni-rs deliberately offers no daemon attachment.

use crate::error::Error;
use crate::manager::{self, Manager, Stats};
use crate::quota::Hook;
use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JClass, JObject, JString};
use jni::sys::{jboolean, jint, jlong, jmethodID, jobject, jvalue, JNI_OK};
use jni::{Env, EnvUnowned};
use once_cell::sync::OnceCell;
use std::ffi::{c_void, CString};

fn status(result: Result<(), Error>) -> jint {
    match result {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}

/// The door for the methods off the hot path: runs `body` with the thread's JNI environment. A
/// panic or a JNI failure becomes a Java `RuntimeException` and the type's default value.
fn in_java<'local, T: Default + 'local>(
    mut unowned: EnvUnowned<'local>,
    body: impl FnOnce(&mut Env<'local>) -> jni::errors::Result<T>,
) -> T {
    unowned.with_env(body).resolve::<ThrowRuntimeExAndDefault>()
}

/// The process-wide manager; when the system has no memory to make it, a Java `OutOfMemoryError`
/// is thrown (pending when this returns the error).
fn manager_or_throw(env: &mut Env) -> jni::errors::Result<&'static Manager> {
    manager::global().or_else(|_| {
        env.throw_new(
            jni::jni_str!("java/lang/OutOfMemoryError"),
            jni::jni_str!("directmem: no memory for the library's own state"),
        )?;
        Err(jni::errors::Error::JavaException)
    })
}

/// Runs the body of a native method that needs no `JNIEnv`; a panic becomes `on_panic` (a status
/// the Java side turns into an exception), never an unwind into the JVM. The hot natives take this
/// door instead of `EnvUnowned::with_env`, which costs about 45 ns a call here (a plain JNI call ~10).
fn without_env<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// `Native.allocate0(int capacity, int alignment, boolean wait)`: a tracked, zeroed block's address
/// (> 0), or minus the failing status code. The Java side owns the block: it wraps it in a buffer
/// (see `Buffers`) and frees it by address, exactly once, through `free0`. Without `wait` a
/// reservation that does not fit fails at once with LIMIT instead of reclaiming and waiting.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_allocate0(
    _env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
    capacity: jint,
    alignment: jint,
    wait: jboolean,
) -> jlong {
    without_env(-jlong::from(Error::Internal.code()), || {
        let (Ok(size), Ok(alignment)) = (usize::try_from(capacity), usize::try_from(alignment)) else {
            return -jlong::from(Error::InvalidArgument.code());
        };
        let m = match manager::global() {
            Ok(m) => m,
            Err(e) => return -jlong::from(e.code()),
        };
        // The common case (a slot and credit at hand) never waits, so it serves both kinds.
        if let Some(ptr) = m.allocate_fast(size, alignment) {
            return ptr.as_ptr() as jlong;
        }
        let block = if wait { m.allocate(size, alignment) } else { m.try_allocate(size, alignment) };
        match block {
            Ok(ptr) => ptr.as_ptr() as jlong,
            Err(e) => -jlong::from(e.code()),
        }
    })
}

/// `Native.free0(long address)`: frees the block at `address`; 0, or the failing status code.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_free0(
    _env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
    address: jlong,
) -> jint {
    without_env(Error::Internal.code(), || {
        let address = usize::try_from(address).map_err(|_| Error::InvalidArgument);
        if address.is_ok_and(|a| manager::made().is_some_and(|m| m.free_fast(a))) {
            return 0;
        }
        status(address.and_then(|a| manager::global()?.free(a)))
    })
}

/// `Native.wrap0(long address, int capacity)`: JNI's `NewDirectByteBuffer`, the slowest of the ways
/// `Buffers` makes a buffer (it runs the constructor through a call back into Java), and the one
/// that needs no setting. Like the others it gives a buffer with no attachment, so every buffer
/// derived from it keeps it reachable. On failure: null, with the JVM's exception pending.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_wrap0(
    env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
    address: jlong,
    capacity: jint,
) -> jni::sys::jobject {
    // Safety: `env` is this thread's JNIEnv (the JVM passes it); `address` is a live block of at
    // least `capacity` bytes (from allocate0), which the Java side frees only once the buffer is
    // unreachable or explicitly freed; NewDirectByteBuffer only records the address.
    without_env(std::ptr::null_mut(), || unsafe {
        ((**env).v1_4.NewDirectByteBuffer)(env, address as *mut c_void, jlong::from(capacity.max(0)))
    })
}

/// `Native.address0(ByteBuffer)`: the buffer's address, 0 if it has none.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_address0(
    env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
    buffer: jni::sys::jobject,
) -> jlong {
    // Safety: `env` is this thread's JNIEnv and `buffer` a local reference the JVM passed (null
    // or not a direct buffer: GetDirectBufferAddress returns null).
    without_env(0, || unsafe { ((**env).v1_4.GetDirectBufferAddress)(env, buffer) as jlong })
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_limit0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) -> jlong {
    in_java(unowned, |env| Ok(clamp(manager_or_throw(env)?.limit())))
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_setLimit0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    bytes: jlong,
) {
    in_java(unowned, |env| {
        manager_or_throw(env)?.set_limit(u64::try_from(bytes).unwrap_or(0));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_setReclaimTimeout0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    millis: jint,
) {
    in_java(unowned, |env| {
        manager_or_throw(env)?.set_reclaim_timeout_ms(u32::try_from(millis).unwrap_or(0));
        Ok(())
    })
}

/// `Native.allocateOnNativeThread0(long size, int rounds, int lingerMillis)`: test support for the
/// reclaim hook's daemon attachment. A plain Rust thread, unknown to the JVM, allocates and frees like
/// a C thread, reports, then stays alive `lingerMillis` (it must not keep the JVM from exiting).
#[cfg(feature = "test-natives")]
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_allocateOnNativeThread0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    size: jlong,
    rounds: jint,
    linger_millis: jint,
) -> jint {
    in_java(unowned, |_env| {
        let (report, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut outcome = 0;
            for _ in 0..rounds {
                match manager::global().and_then(|m| m.allocate(size.max(0) as usize, 0)) {
                    Ok(p) => {
                        let _ = manager::global().and_then(|m| m.free(p.as_ptr() as usize));
                    }
                    Err(e) => {
                        outcome = status(Err(e));
                        break;
                    }
                }
            }
            let _ = report.send(outcome);
            std::thread::sleep(std::time::Duration::from_millis(linger_millis.max(0) as u64));
        });
        Ok(result.recv().unwrap_or(Error::Internal.code()))
    })
}

/// `Native.statsInto0(StatsFields)`: every counter written into the Java field of the same name
/// ([`Stats::fields`] is the one list), so no position is shared between the two languages.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_statsInto0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    target: JObject<'local>,
) {
    in_java(unowned, |env| {
        let stats: Stats = manager_or_throw(env)?.stats();
        let raw = env.get_raw();
        // Safety (throughout): `raw` is this thread's JNIEnv and `target` a live local
        // reference; a missing field leaves NoSuchFieldError pending, which the Java caller sees.
        let fns = unsafe { &**raw };
        let class = unsafe { (fns.v1_1.GetObjectClass)(raw, target.as_raw()) };
        let written = stats.fields().into_iter().try_for_each(|(name, value)| {
            let name = CString::new(name).expect("field names have no NUL");
            let field = unsafe { (fns.v1_1.GetFieldID)(raw, class, name.as_ptr(), c"J".as_ptr()) };
            if field.is_null() {
                return Err(jni::errors::Error::JavaException);
            }
            unsafe { (fns.v1_1.SetLongField)(raw, target.as_raw(), field, clamp(value)) };
            Ok(())
        });
        unsafe { (fns.v1_1.DeleteLocalRef)(raw, class) };
        written
    })
}

/// `Native.available0()`: bytes that fit under the limit now (0 when reserved is above it).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_available0(
    _env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
) -> jlong {
    without_env(0, || manager::global().map_or(0, |m| clamp(m.available())))
}

/// `Native.decay0()`: gives back the memory kept for reuse whose time is up; the bytes.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_decay0(
    _env: *mut jni::sys::JNIEnv,
    _class: jni::sys::jclass,
) -> jlong {
    without_env(0, || manager::global().map_or(0, |m| clamp(m.decay())))
}

/// `Native.trim0()`: gives back all the memory kept for reuse, every thread's (`dm_trim`); the bytes.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_trim0(_env: *mut jni::sys::JNIEnv, _class: jni::sys::jclass) -> jlong {
    without_env(0, || manager::global().map_or(0, |m| clamp(m.trim())))
}

/// `Native.statusCode0(String name)`: the code of the failure named so in the core's table
/// ([`Error::name`]), or -1 if there is none.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_statusCode0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    name: JString<'local>,
) -> jint {
    in_java(unowned, |env| {
        let name = name.try_to_string(env)?;
        Ok(Error::ALL.into_iter().find(|e| e.name() == name).map_or(-1, Error::code))
    })
}

/// `Native.statusMessage0(int code)`: the core's text for a status code (as `dm_status_message`).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_statusMessage0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    code: jint,
) -> JString<'local> {
    in_java(unowned, |env| env.new_string(Error::from_code(code).map_or("unknown status", Error::message)))
}

/// `Native.version0()`: the library's version, which the Java side compares with the one its jar
/// was built for.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_version0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) -> JString<'local> {
    in_java(unowned, |env| env.new_string(env!("CARGO_PKG_VERSION")))
}

/// `Native.forceGc0()`: a full collection through JVMTI's `ForceGarbageCollection`, which
/// `-XX:+DisableExplicitGC` does not turn off (it governs `System.gc()` alone). Needs no
/// capability and no agent; returns the JVMTI error code (0 on success), or -1 without JVMTI.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_forceGc0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) -> jint {
    in_java(unowned, |env| {
        const JVMTI_VERSION_1_2: jint = 0x3001_0200;
        /// `ForceGarbageCollection` is function 108 of the JVMTI table, which starts at 1.
        const FORCE_GARBAGE_COLLECTION: usize = 108 - 1;
        let raw = env.get_raw();
        // Safety: `raw` is this thread's JNIEnv; GetEnv with a JVMTI version yields a jvmtiEnv
        // whose first word points to the function table of jvmti.h (stable since JVMTI 1.0);
        // entry 108 has the type `jvmtiError (*)(jvmtiEnv*)`. The calling thread is attached.
        unsafe {
            let fns = &**raw;
            let mut vm: *mut jni::sys::JavaVM = std::ptr::null_mut();
            if (fns.v1_1.GetJavaVM)(raw, &mut vm) != JNI_OK {
                return Ok(-1);
            }
            let mut jvmti: *mut c_void = std::ptr::null_mut();
            if ((**vm).v1_2.GetEnv)(vm, &mut jvmti, JVMTI_VERSION_1_2) != JNI_OK || jvmti.is_null() {
                return Ok(-1);
            }
            let table = *(jvmti as *const *const Option<unsafe extern "system" fn(*mut c_void) -> jint>);
            match *table.add(FORCE_GARBAGE_COLLECTION) {
                Some(force) => Ok(force(jvmti)),
                None => Ok(-1),
            }
        }
    })
}

fn clamp(value: u64) -> jlong {
    jlong::try_from(value).unwrap_or(jlong::MAX)
}

/// `Native.parseSize0(String)`: the one size parser, shared with DM_MAX_MEMORY; -1 if invalid.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_parseSize0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    text: JString<'local>,
) -> jlong {
    in_java(unowned, |env| {
        let text = text.try_to_string(env)?;
        Ok(crate::limit::parse_size(&text).and_then(|v| jlong::try_from(v).ok()).unwrap_or(-1))
    })
}

/// What the reclaim hook needs to call `Reclaimer.reclaim(long)` from any thread.
struct JavaReclaimer {
    vm: *mut jni::sys::JavaVM,
    class: jobject, // a JNI global reference to dev.directmem.Reclaimer: never freed, like the class
    method: jmethodID,
}

// Safety: a JavaVM pointer, a global reference and a method ID are valid on every thread.
unsafe impl Send for JavaReclaimer {}
unsafe impl Sync for JavaReclaimer {}

static RECLAIMER: OnceCell<JavaReclaimer> = OnceCell::new();

/// `Native.installReclaimHook0()`: the library's reclaim hook asks the JVM for a GC.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_installReclaimHook0<'local>(
    unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) {
    in_java(unowned, |env| {
        let raw = env.get_raw();
        RECLAIMER.get_or_try_init(|| {
            // Safety: `raw` is this thread's valid JNIEnv; the class name and signature are
            // NUL-terminated literals; a failed lookup leaves a pending exception we report.
            unsafe {
                let fns = &**raw;
                let local = (fns.v1_1.FindClass)(raw, c"dev/directmem/Reclaimer".as_ptr());
                if local.is_null() {
                    return Err(jni::errors::Error::JavaException);
                }
                let method = (fns.v1_1.GetStaticMethodID)(raw, local, c"reclaim".as_ptr(), c"(J)V".as_ptr());
                if method.is_null() {
                    return Err(jni::errors::Error::JavaException);
                }
                let class = (fns.v1_1.NewGlobalRef)(raw, local);
                let mut vm: *mut jni::sys::JavaVM = std::ptr::null_mut();
                if (fns.v1_1.GetJavaVM)(raw, &mut vm) != JNI_OK || class.is_null() {
                    return Err(jni::errors::Error::JavaException);
                }
                Ok(JavaReclaimer { vm, class, method })
            }
        })?;
        // Without memory for the hook, reservations go on without the JVM's help (with the C heap
        // out of memory at the JVM's start, little else will work either).
        if let Some(hook) = Hook::new(reclaim_through_java) {
            manager_or_throw(env)?.set_reclaim_hook(Some(hook));
        }
        Ok(())
    })
}

/// The reclaim hook: `Reclaimer.reclaim(bytes)` on this thread. A thread the JVM does not know yet
/// (a C thread allocating in the same process) is attached as a daemon for the call and detached
/// right after: left attached, every short-lived C thread that once needed a round would stay in
/// the JVM's thread list for good. Java exceptions are cleared: a failed GC request just means waiting.
fn reclaim_through_java(bytes: u64) {
    let Some(r) = RECLAIMER.get() else { return };
    // Safety: `r.vm` is the live JavaVM (the library cannot be unloaded while the JVM runs); the
    // env obtained is this thread's; `class` and `method` were checked when the hook was installed.
    // A thread is detached only if this call attached it, and only after its Java frames returned.
    unsafe {
        let invoke = &**r.vm;
        let mut env: *mut c_void = std::ptr::null_mut();
        let mut rc = (invoke.v1_2.GetEnv)(r.vm, &mut env, jni::sys::JNI_VERSION_1_8);
        let attached_here = rc == jni::sys::JNI_EDETACHED;
        if attached_here {
            rc = (invoke.v1_4.AttachCurrentThreadAsDaemon)(r.vm, &mut env, std::ptr::null_mut());
        }
        if rc != JNI_OK || env.is_null() {
            return;
        }
        let env = env as *mut jni::sys::JNIEnv;
        let fns = &**env;
        let args = [jvalue { j: clamp(bytes) }];
        (fns.v1_1.CallStaticVoidMethodA)(env, r.class, r.method, args.as_ptr());
        if (fns.v1_2.ExceptionCheck)(env) {
            (fns.v1_1.ExceptionClear)(env);
        }
        if attached_here {
            (invoke.v1_1.DetachCurrentThread)(r.vm);
        }
    }
}

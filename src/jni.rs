//! The native half of `dev.directmem.Native` (Java API: `dev.directmem.DirectMemory`).
//!
//! Thin like the C ABI: each native method calls the same [`Manager`](crate::manager) and returns a
//! status or value; the Java side turns statuses into exceptions, so messages live in one place.
//! Every method runs inside `EnvUnowned::with_env`, which catches panics; a panic or JNI failure
//! becomes a `RuntimeException`, never a crash of the JVM.
//!
//! The reclaim hook is the one path that enters Java from native code: it may run on a thread the
//! JVM has never seen (a C thread allocating in the same process), which is attached as a daemon so
//! it never keeps the JVM from exiting. It uses the raw invocation interface for that, because
//! jni-rs deliberately offers no daemon attachment.

use crate::error::Error;
use crate::manager::{self, Stats};
use crate::registry::Action;
use jni::errors::ThrowRuntimeExAndDefault;
use jni::objects::{JByteBuffer, JClass, JLongArray, JString};
use jni::sys::{jboolean, jint, jlong, jmethodID, jobject, jvalue, JNI_OK};
use jni::EnvUnowned;
use once_cell::sync::OnceCell;
use std::ffi::c_void;
use std::sync::Arc;

fn status(result: Result<(), Error>) -> jlong {
    match result {
        Ok(()) => 0,
        Err(e) => crate::ffi::dm_status::from(e) as jlong,
    }
}

/// `Native.allocate0(int capacity, int alignment, boolean wait, long[] out)`: a tracked, zeroed block
/// with one cleaner (no action: the Java side owns the release), wrapped in a direct ByteBuffer.
/// Without `wait` a reservation that does not fit fails at once (the Java slabs then take the
/// ordinary path, which reclaims and waits).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_allocate0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    capacity: jint,
    alignment: jint,
    wait: jboolean,
    out: JLongArray<'local>,
) -> JByteBuffer<'local> {
    unowned
        .with_env(|env| -> jni::errors::Result<JByteBuffer<'local>> {
            let m = manager::global();
            let block = (|| {
                let size = usize::try_from(capacity).map_err(|_| Error::InvalidArgument)?;
                let alignment = usize::try_from(alignment).map_err(|_| Error::InvalidArgument)?;
                let ptr = if wait { m.allocate(size, alignment)? } else { m.try_allocate(size, alignment)? };
                let no_action = Action { function: None, ctx: std::ptr::null_mut() };
                match m.register_cleaner(ptr.as_ptr() as usize, no_action) {
                    Ok(cleaner) => Ok((ptr, size, cleaner)),
                    Err(e) => {
                        let _ = m.free(ptr.as_ptr() as usize);
                        Err(e)
                    }
                }
            })();
            let (ptr, size, cleaner) = match block {
                Ok(b) => b,
                Err(e) => {
                    out.set_region(env, 0, &[status(Err(e))])?;
                    return Ok(JByteBuffer::null());
                }
            };
            // Safety: `ptr` is a live block of `size` bytes that stays allocated until its cleaner
            // runs, which the Java side arranges only once the buffer is unreachable or freed.
            let buffer = unsafe { env.new_direct_byte_buffer(ptr.as_ptr(), size) }
                .and_then(|buffer| out.set_region(env, 0, &[cleaner as jlong]).map(|()| buffer));
            if buffer.is_err() {
                let _ = m.clean(cleaner); // the Java side will never see it: release it now
            }
            buffer
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `Native.clean0(long cleaner)`: true if this call released the block.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_clean0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    cleaner: jlong,
) -> jboolean {
    unowned
        .with_env(|_env| -> jni::errors::Result<jboolean> { Ok(manager::global().clean(cleaner as u64).is_ok()) })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `Native.address0(ByteBuffer)`: the buffer's address, 0 if it has none.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_address0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    buffer: JByteBuffer<'local>,
) -> jlong {
    unowned
        .with_env(|env| -> jni::errors::Result<jlong> {
            Ok(env.get_direct_buffer_address(&buffer).map_or(0, |p| p as jlong))
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_limit0<'local>(mut unowned: EnvUnowned<'local>, _class: JClass<'local>) -> jlong {
    unowned
        .with_env(|_env| -> jni::errors::Result<jlong> { Ok(manager::global().limit().min(i64::MAX as u64) as jlong) })
        .resolve::<ThrowRuntimeExAndDefault>()
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_setLimit0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    bytes: jlong,
) {
    unowned
        .with_env(|_env| -> jni::errors::Result<()> {
            manager::global().set_limit(bytes.max(0) as u64);
            Ok(())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_setReclaimTimeout0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    millis: jint,
) {
    unowned
        .with_env(|_env| -> jni::errors::Result<()> {
            manager::global().set_reclaim_timeout_ms(millis.max(0) as u32);
            Ok(())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `Native.allocateOnNativeThread0(long size, int rounds, int lingerMillis)`: test support for the
/// reclaim hook's daemon attachment. A plain Rust thread, unknown to the JVM, allocates and frees like
/// a C thread, reports, then stays alive `lingerMillis` (it must not keep the JVM from exiting).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_allocateOnNativeThread0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    size: jlong,
    rounds: jint,
    linger_millis: jint,
) -> jint {
    unowned
        .with_env(|_env| -> jni::errors::Result<jint> {
            let (report, result) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let m = manager::global();
                let mut outcome = 0;
                for _ in 0..rounds {
                    match m.allocate(size.max(0) as usize, 0) {
                        Ok(p) => {
                            let _ = m.free(p.as_ptr() as usize);
                        }
                        Err(e) => {
                            outcome = status(Err(e)) as jint;
                            break;
                        }
                    }
                }
                let _ = report.send(outcome);
                std::thread::sleep(std::time::Duration::from_millis(linger_millis.max(0) as u64));
            });
            Ok(result.recv().unwrap_or(crate::ffi::dm_status::DM_ERR_INTERNAL as jint))
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `Native.stats0()`: the dm_stats fields, in header order.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_stats0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) -> JLongArray<'local> {
    unowned
        .with_env(|env| -> jni::errors::Result<JLongArray<'local>> {
            let s: Stats = manager::global().stats();
            let fields = [
                s.limit, s.reserved, s.capacity, s.count, s.peak_reserved, s.total_allocations,
                s.live_cleaners, s.cleaners_run, s.reclaim_requests, s.limit_failures,
            ]
            .map(|v| v.min(i64::MAX as u64) as jlong);
            let array = env.new_long_array(fields.len())?;
            array.set_region(env, 0, &fields)?;
            Ok(array)
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// `Native.parseSize0(String)`: the one size parser, shared with DM_MAX_MEMORY; -1 if invalid.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_directmem_Native_parseSize0<'local>(
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
    text: JString<'local>,
) -> jlong {
    unowned
        .with_env(|env| -> jni::errors::Result<jlong> {
            let text = text.try_to_string(env)?;
            Ok(crate::limit::parse_size(&text).filter(|&v| v <= i64::MAX as u64).map_or(-1, |v| v as jlong))
        })
        .resolve::<ThrowRuntimeExAndDefault>()
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
    mut unowned: EnvUnowned<'local>,
    _class: JClass<'local>,
) {
    unowned
        .with_env(|env| -> jni::errors::Result<()> {
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
            manager::global().set_reclaim_hook(Some(Arc::new(reclaim_through_java)));
            Ok(())
        })
        .resolve::<ThrowRuntimeExAndDefault>()
}

/// The reclaim hook: `Reclaimer.reclaim(bytes)` on this thread, attaching it as a daemon if the JVM
/// does not know it yet. Java exceptions are cleared: a failed GC request just means waiting.
fn reclaim_through_java(bytes: u64) {
    let Some(r) = RECLAIMER.get() else { return };
    // Safety: `r.vm` is the live JavaVM (the library cannot be unloaded while the JVM runs); the
    // env obtained is this thread's; `class` and `method` were checked when the hook was installed.
    unsafe {
        let invoke = &**r.vm;
        let mut env: *mut c_void = std::ptr::null_mut();
        let mut rc = (invoke.v1_2.GetEnv)(r.vm, &mut env, jni::sys::JNI_VERSION_1_8);
        if rc == jni::sys::JNI_EDETACHED {
            rc = (invoke.v1_4.AttachCurrentThreadAsDaemon)(r.vm, &mut env, std::ptr::null_mut());
        }
        if rc != JNI_OK || env.is_null() {
            return;
        }
        let env = env as *mut jni::sys::JNIEnv;
        let fns = &**env;
        let args = [jvalue { j: bytes.min(i64::MAX as u64) as jlong }];
        (fns.v1_1.CallStaticVoidMethodA)(env, r.class, r.method, args.as_ptr());
        if (fns.v1_2.ExceptionCheck)(env) {
            (fns.v1_1.ExceptionClear)(env);
        }
    }
}

/* A toy run-length codec as a JNI library of its own: it includes only directmem.h (and jni.h),
 * links -ldirectmem, and takes its output buffers from directmem. Loaded into a JVM that also uses
 * dev.directmem.DirectMemory, its blocks and the program's ByteBuffers share one limit and one set
 * of counters; when an encode does not fit, the JVM's reclaim hook (a GC that frees dropped
 * ByteBuffers) makes room, and dm_allocate succeeds. See CodecDemo.java. */
#include <jni.h>
#include <stdint.h>
#include <string.h>

#include "directmem.h"

static void throw_oom(JNIEnv *env, dm_status status) {
    jclass oom = (*env)->FindClass(env, "java/lang/OutOfMemoryError");
    if (oom != NULL) (*env)->ThrowNew(env, oom, dm_status_message((int)status));
}

/* Encodes `length` bytes of the direct buffer `source` as (count, byte) pairs into a new block:
 * [uint64_t encoded length][pairs...]. Returns the block as a handle; 0 with an exception pending. */
JNIEXPORT jlong JNICALL Java_CodecDemo_encode(JNIEnv *env, jclass cls, jobject source, jint length) {
    (void)cls;
    const unsigned char *in = (*env)->GetDirectBufferAddress(env, source);
    if (in == NULL || length < 0) {
        jclass iae = (*env)->FindClass(env, "java/lang/IllegalArgumentException");
        if (iae != NULL) (*env)->ThrowNew(env, iae, "encode needs a direct buffer and a length >= 0");
        return 0;
    }
    unsigned char *out;
    dm_status status = dm_allocate(sizeof(uint64_t) + 2 * (size_t)length, 0, (void **)&out);
    if (status != DM_OK) {
        throw_oom(env, status);
        return 0;
    }
    uint64_t n = 0;
    unsigned char *pairs = out + sizeof(uint64_t);
    for (jint i = 0; i < length;) {
        unsigned char value = in[i];
        unsigned char run = 1;
        while (i + run < length && in[i + run] == value && run < 255) run++;
        pairs[n++] = run;
        pairs[n++] = value;
        i += run;
    }
    memcpy(out, &n, sizeof n);
    return (jlong)(uintptr_t)out;
}

JNIEXPORT jlong JNICALL Java_CodecDemo_encodedLength(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    uint64_t n;
    memcpy(&n, (const void *)(uintptr_t)handle, sizeof n);
    return (jlong)n;
}

JNIEXPORT void JNICALL Java_CodecDemo_release(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    dm_free((void *)(uintptr_t)handle);
}

/* What C code in the process sees: live blocks and reserved bytes, Java's buffers included. */
JNIEXPORT jlongArray JNICALL Java_CodecDemo_nativeStats(JNIEnv *env, jclass cls) {
    (void)cls;
    dm_stats s;
    dm_get_stats(&s);
    jlong values[3] = {(jlong)s.count, (jlong)s.reserved, (jlong)s.reclaim_requests};
    jlongArray result = (*env)->NewLongArray(env, 3);
    if (result != NULL) (*env)->SetLongArrayRegion(env, result, 0, 3, values);
    return result;
}

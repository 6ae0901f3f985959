package dev.directmem;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** Tests that change the limit and leave buffers to the GC: each starts and ends with nothing of ours live. */
abstract class SettledTest {
    @BeforeEach
    void settle() throws InterruptedException {
        Support.settle();
    }

    @AfterEach
    void restore() throws InterruptedException {
        Support.settle();
    }
}

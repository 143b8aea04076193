/* Devices, streams and events. */
#include <string.h>

#include "backend.h"
#include "filo_test.h"

Test(device, parse_and_format)
{
    filo_device d;
    FILO_CHECK(filo_device_parse("cpu", &d));
    cr_assert(filo_device_equal(d, filo_cpu()));
    char buf[32];
    cr_assert_str_eq(filo_device_format(filo_cuda(3), buf, sizeof buf), "cuda:3");
    FILO_CHECK_FAILS(filo_device_parse("gpu", &d), FILO_ERR_DEVICE, "'gpu' is not a device");
    FILO_CHECK_FAILS(filo_device_parse("cuda:x", &d), FILO_ERR_DEVICE, "is not a device");
    FILO_CHECK_FAILS(filo_device_parse("cuda:40", &d), FILO_ERR_DEVICE, "cuda:40 does not exist");
    if (filo_cuda_device_count() > 0) {
        FILO_CHECK(filo_device_parse("cuda", &d));
        cr_assert(filo_device_equal(d, filo_cuda(0)));
    } else {
        FILO_CHECK_FAILS(filo_device_parse("cuda", &d), FILO_ERR_DEVICE, "0 CUDA devices available");
    }
}

Test(device, info_on_every_backend)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device_info info;
        FILO_CHECK(filo_device_info_get(devs[b], &info));
        cr_log_info("%s: %s, %zu MiB, %d SMs/cores", filo_test_backend_name(devs[b]), info.name,
                    info.total_memory >> 20, info.multiprocessors);
        cr_assert(info.total_memory > 0);
        cr_assert(info.multiprocessors > 0);
        if (devs[b].type == FILO_DEVICE_CUDA) {
            cr_assert(info.compute_major >= 8, "filo targets sm_80 and newer");
            cr_assert_eq(info.emulated, filo_cuda_is_emulated());
        }
    }
}

/* Work on a side stream, ordered after the default stream through an event. */
Test(device, streams_and_events_order_work)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device dev = devs[b];
        filo_stream *main_stream, *side;
        filo_event *ready, *t0, *t1;
        FILO_CHECK(filo_stream_default(dev, &main_stream));
        FILO_CHECK(filo_stream_create(dev, &side));
        FILO_CHECK(filo_event_create(dev, &ready));
        FILO_CHECK(filo_event_create(dev, &t0));
        FILO_CHECK(filo_event_create(dev, &t1));
        float ms;
        FILO_CHECK_FAILS(filo_event_elapsed_ms(t0, t1, &ms), FILO_ERR_STATE, "must be recorded");

        int64_t shape[1] = {1000};
        filo_tensor *a, *c;
        FILO_CHECK(filo_event_record(t0, main_stream));
        FILO_CHECK(filo_tensor_full(dev, FILO_F32, 1, shape, 3.0, &a));
        FILO_CHECK(filo_event_record(ready, main_stream));
        FILO_CHECK(filo_stream_wait_event(side, ready));
        FILO_CHECK(filo_stream_set_current(dev, side));
        FILO_CHECK(filo_tensor_contiguous(a, &c));
        filo_tensor *c2;
        FILO_CHECK(filo_tensor_empty_like(a, &c2));
        FILO_CHECK(filo_tensor_copy(c2, a));
        FILO_CHECK(filo_stream_set_current(dev, NULL));
        FILO_CHECK(filo_event_record(t1, side));
        FILO_CHECK(filo_event_synchronize(t1));
        int done = 0;
        FILO_CHECK(filo_event_query(t1, &done));
        cr_assert(done);
        FILO_CHECK(filo_event_elapsed_ms(t0, t0, &ms));
        cr_assert(ms >= 0.0f && ms < 1.0f);
        float v[1000];
        FILO_CHECK(filo_tensor_to_host(c2, v, sizeof v));
        cr_assert_eq(v[999], 3.0f);
        FILO_CHECK(filo_device_synchronize(dev));

        filo_stream *current;
        FILO_CHECK(filo_stream_current(dev, &current));
        cr_assert_eq(current, main_stream);
        filo_tensor_free(a);
        filo_tensor_free(c);
        filo_tensor_free(c2);
        filo_event_destroy(ready);
        filo_event_destroy(t0);
        filo_event_destroy(t1);
        filo_stream_destroy(side);
    }
}

Test(device, errors)
{
    FILO_CHECK_FAILS(filo_device_check((filo_device){FILO_DEVICE_CPU, 2}), FILO_ERR_DEVICE, "cpu device index must be 0");
    FILO_CHECK_FAILS(filo_stream_synchronize(NULL), FILO_ERR_INVALID_ARG, "stream is NULL");
    filo_stream *s;
    FILO_CHECK_FAILS(filo_stream_create(filo_cuda(50), &s), FILO_ERR_DEVICE, "cuda:50 does not exist");
    cr_assert_str_eq(filo_status_name(FILO_ERR_OOM), "FILO_ERR_OOM");
    filo_error_clear();
    cr_assert_str_eq(filo_last_error(), "");
}

/* The library handles of a CUDA device are created on first use and then reused. */
Test(device, library_handles_are_lazy_and_cached)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        if (devs[b].type != FILO_DEVICE_CUDA)
            continue;
        void *lt1, *lt2, *dnn;
        filo_stream *s;
        FILO_CHECK(filo_stream_default(devs[b], &s));
        FILO_CHECK(filo_cuda_blaslt_handle(devs[b].index, &lt1));
        FILO_CHECK(filo_cuda_blaslt_handle(devs[b].index, &lt2));
        FILO_CHECK(filo_cuda_dnn_handle(devs[b].index, filo_stream_native(s), &dnn));
        cr_assert(lt1 != NULL && lt1 == lt2 && dnn != NULL, "handles on %s", filo_test_backend_name(devs[b]));
    }
}

/* Asking a device for more than it has gives FILO_ERR_OOM with the allocator's numbers. */
Test(device, out_of_memory_is_an_error_with_stats)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        if (devs[b].type != FILO_DEVICE_CUDA)
            continue;
        filo_device_info info;
        FILO_CHECK(filo_device_info_get(devs[b], &info));
        int64_t shape[1] = {(int64_t)(info.total_memory / 4) * 2}; /* twice the device's memory in f32 */
        filo_tensor *t;
        FILO_CHECK_FAILS(filo_tensor_empty(devs[b], FILO_F32, 1, shape, &t), FILO_ERR_OOM, "reserved");
        cr_log_info("%s OOM message: %s", filo_test_backend_name(devs[b]), filo_last_error());
        /* the device still works afterwards */
        int64_t small[1] = {16};
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 1, small, &t));
        filo_tensor_free(t);
    }
}

/* A user's program: makes a tensor on the CPU, fills it and reads it back. */
#include <filo/filo.h>
#include <stdio.h>

int main(void)
{
    int64_t shape[2] = {2, 3};
    filo_tensor *t;
    if (filo_tensor_full(filo_cpu(), FILO_F32, 2, shape, 1.5, &t) != FILO_OK) {
        fprintf(stderr, "consumer: %s\n", filo_last_error());
        return 1;
    }
    float v[6];
    if (filo_tensor_to_host(t, v, sizeof v) != FILO_OK || v[5] != 1.5f) {
        fprintf(stderr, "consumer: wrong values: %s\n", filo_last_error());
        return 1;
    }
    filo_tensor_free(t);
    printf("consumer: ok, %d CUDA device(s)\n", filo_cuda_device_count());
    return 0;
}

/* driver.c: time y = W x (+ bias) for one layer file on the current core.
 *
 *   structmat-bench LAYER INPUT [--warmup N] [--repeats N] [--min-sample-ns NS] [--output PATH]
 *   structmat-bench --check LAYER      validate the file and print its description
 *   structmat-bench --list             print the compiled families
 *
 * INPUT is n raw little-endian float32 values. After N warm-up products, each of the timed samples runs
 * `inner` consecutive products (inner is calibrated so that a sample lasts at least --min-sample-ns, which
 * keeps the clock's resolution out of small products) and is read with clock_gettime(CLOCK_MONOTONIC).
 * Results go to stdout as one JSON object on one line: median, min and max nanoseconds per product, and
 * the sum and absolute sum of the output (checksums). --output writes the m outputs as raw float32.
 * Any error prints one line "structmat-bench: error: ..." to stderr and exits with status 2.
 */
#define _POSIX_C_SOURCE 200809L
#include "structmat_layer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_USAGE 2

static void die(const char *message)
{
    fprintf(stderr, "structmat-bench: error: %s\n", message);
    exit(EXIT_USAGE);
}

static void die_error(const sm_error *error)
{
    die(error->message);
}

static long parse_count(const char *option, const char *text, long minimum)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < minimum) {
        sm_error error;
        sm_fail(&error, "%s must be an integer >= %ld; got '%s'", option, minimum, text);
        die_error(&error);
    }
    return value;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *read_input(const char *path, int64_t n)
{
    sm_error error;
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        sm_fail(&error, "cannot open input %s: %s", path, strerror(errno));
        die_error(&error);
    }
    long size = -1;
    if (fseek(file, 0, SEEK_END) == 0)
        size = ftell(file);
    if (size < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fclose(file);
        sm_fail(&error, "cannot determine the size of input %s", path);
        die_error(&error);
    }
    if ((uint64_t)size != 4u * (uint64_t)n) {
        fclose(file);
        sm_fail(&error, "input %s has %ld bytes; the layer needs n = %lld float32 values (%lld bytes)", path, size,
                (long long)n, (long long)(4 * n));
        die_error(&error);
    }
    float *x = sm_alloc(sizeof(float) * (size_t)n);
    if (x == NULL || fread(x, sizeof(float), (size_t)n, file) != (size_t)n) {
        fclose(file);
        sm_fail(&error, "could not read input %s", path);
        die_error(&error);
    }
    fclose(file);
    return x;
}

static void product(const sm_family *family, const sm_layer *layer, const float *x, float *y)
{
    family->apply(layer, x, y);
    if (layer->bias != NULL) {
        const size_t m = (size_t)layer->m;
        for (size_t i = 0; i < m; ++i)
            y[i] += layer->bias[i];
    }
}

/* a JSON number, with NaN and infinities spelled as Python's json module reads them */
static void print_number(const char *key, double value)
{
    if (isnan(value))
        printf(", \"%s\": NaN", key);
    else if (isinf(value))
        printf(", \"%s\": %sInfinity", key, value < 0 ? "-" : "");
    else
        printf(", \"%s\": %.17g", key, value);
}

static int list_families(void)
{
    for (size_t k = 0; sm_families[k] != NULL; ++k) {
        for (size_t j = 0; j < k; ++j)
            if (sm_families[j]->id == sm_families[k]->id) {
                sm_error error;
                sm_fail(&error, "families %s and %s share id %u", sm_families[j]->name, sm_families[k]->name,
                        sm_families[k]->id);
                die_error(&error);
            }
        printf("%u %s\n", sm_families[k]->id, sm_families[k]->name);
    }
    return 0;
}

static void print_description(const sm_layer *layer, const sm_family *family)
{
    printf("{\"family\": \"%s\", \"family_id\": %u, \"m\": %lld, \"n\": %lld, \"bias\": %s, \"meta\": %u, "
           "\"arrays\": %u", family->name, family->id, (long long)layer->m, (long long)layer->n,
           layer->bias != NULL ? "true" : "false", layer->n_meta, layer->n_arrays);
}

int main(int argc, char **argv)
{
    const char *layer_path = NULL, *input_path = NULL, *output_path = NULL;
    long warmup = 10, repeats = 51;
    double min_sample_ns = 20000.0;
    int check_only = 0;
    for (int k = 1; k < argc; ++k) {
        const char *arg = argv[k];
        const int has_value = k + 1 < argc;
        if (strcmp(arg, "--list") == 0)
            return list_families();
        if (strcmp(arg, "--check") == 0)
            check_only = 1;
        else if (strcmp(arg, "--warmup") == 0 && has_value)
            warmup = parse_count(arg, argv[++k], 0);
        else if (strcmp(arg, "--repeats") == 0 && has_value)
            repeats = parse_count(arg, argv[++k], 1);
        else if (strcmp(arg, "--min-sample-ns") == 0 && has_value)
            min_sample_ns = (double)parse_count(arg, argv[++k], 0);
        else if (strcmp(arg, "--output") == 0 && has_value)
            output_path = argv[++k];
        else if (arg[0] == '-' && arg[1] == '-') {
            sm_error error;
            sm_fail(&error, "unknown or incomplete option '%s'; usage: structmat-bench LAYER INPUT [--warmup N] "
                    "[--repeats N] [--min-sample-ns NS] [--output PATH] | --check LAYER | --list", arg);
            die_error(&error);
        } else if (layer_path == NULL)
            layer_path = arg;
        else if (input_path == NULL)
            input_path = arg;
        else
            die("too many arguments; usage: structmat-bench LAYER INPUT [options]");
    }
    if (layer_path == NULL || (input_path == NULL && !check_only))
        die("usage: structmat-bench LAYER INPUT [--warmup N] [--repeats N] [--min-sample-ns NS] [--output PATH] "
            "| --check LAYER | --list");

    sm_layer layer;
    const sm_family *family;
    sm_error error;
    if (sm_load_layer(layer_path, &layer, &family, &error) != 0)
        die_error(&error);
    if (check_only) {
        print_description(&layer, family);
        printf("}\n");
        sm_free_layer(&layer, family);
        return 0;
    }
    float *x = read_input(input_path, layer.n);
    float *y = sm_alloc(sizeof(float) * (size_t)layer.m);
    double *samples = malloc(sizeof(double) * (size_t)repeats);
    if (y == NULL || samples == NULL)
        die("out of memory");

    /* warm-up, then calibrate how many products one sample needs */
    double single = 0.0;
    for (long k = 0; k < warmup; ++k) {
        const double start = now_ns();
        product(family, &layer, x, y);
        const double elapsed = now_ns() - start;
        single = (k == 0 || elapsed < single) ? elapsed : single;
    }
    if (warmup == 0) {
        const double start = now_ns();
        product(family, &layer, x, y);
        single = now_ns() - start;
    }
    long inner = 1;
    if (single > 0.0 && single < min_sample_ns)
        inner = (long)ceil(min_sample_ns / single);
    if (inner > 1000000)
        inner = 1000000;

    for (long k = 0; k < repeats; ++k) {
        const double start = now_ns();
        for (long j = 0; j < inner; ++j)
            product(family, &layer, x, y);
        samples[k] = (now_ns() - start) / (double)inner;
    }
    qsort(samples, (size_t)repeats, sizeof(double), compare_doubles);
    const double median = (repeats % 2) ? samples[repeats / 2]
                                        : 0.5 * (samples[repeats / 2 - 1] + samples[repeats / 2]);
    double sum = 0.0, abs_sum = 0.0;
    for (int64_t i = 0; i < layer.m; ++i) {
        sum += y[i];
        abs_sum += fabs(y[i]);
    }
    if (output_path != NULL) {
        FILE *file = fopen(output_path, "wb");
        if (file == NULL || fwrite(y, sizeof(float), (size_t)layer.m, file) != (size_t)layer.m
            || fclose(file) != 0) {
            sm_fail(&error, "cannot write output %s", output_path);
            die_error(&error);
        }
    }
    print_description(&layer, family);
    printf(", \"warmup\": %ld, \"repeats\": %ld, \"inner\": %ld, \"median_ns\": %.1f, \"min_ns\": %.1f, "
           "\"max_ns\": %.1f", warmup, repeats, inner, median, samples[0], samples[repeats - 1]);
    print_number("checksum", sum);
    print_number("abs_checksum", abs_sum);
    printf("}\n");
    free(samples);
    sm_free(y);
    sm_free(x);
    sm_free_layer(&layer, family);
    return 0;
}

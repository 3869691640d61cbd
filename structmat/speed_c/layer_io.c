/* layer_io.c: read and validate a structmat layer file, and the helpers family kernels use in prepare().
 *
 * The format is documented in structmat/speed_c/layer_format.py. The whole file is read into one aligned
 * buffer, then parsed with every offset and count checked against the file length before it is used, so a
 * truncated or corrupt file gives one error line and never an out-of-bounds read.
 */
#include "structmat_layer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char SM_MAGIC[8] = {'S', 'M', 'L', 'A', 'Y', 'E', 'R', '\0'};
#define SM_MAX_SIDE ((int64_t)1 << 31) /* m, n < 2^31 */
#define SM_MAX_META (1u << 24)
#define SM_MAX_ARRAYS (1u << 16)
#define SM_FLAG_BIAS 1u

int sm_fail(sm_error *error, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
    return -1;
}

void *sm_alloc(size_t bytes)
{
    /* malloc plus manual alignment keeps this C99; the offset is stored just before the block. */
    const size_t extra = SM_ALIGN + sizeof(void *);
    if (bytes > SIZE_MAX - extra)
        return NULL;
    unsigned char *raw = calloc(1, bytes + extra);
    if (raw == NULL)
        return NULL;
    uintptr_t start = (uintptr_t)(raw + sizeof(void *));
    uintptr_t aligned = (start + (SM_ALIGN - 1)) & ~(uintptr_t)(SM_ALIGN - 1);
    ((void **)aligned)[-1] = raw;
    return (void *)aligned;
}

void sm_free(void *pointer)
{
    if (pointer != NULL)
        free(((void **)pointer)[-1]);
}

int sm_mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a))
        return 0;
    *out = a * b;
    return 1;
}

int sm_add(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || a > INT64_MAX - b)
        return 0;
    *out = a + b;
    return 1;
}

int sm_expect_meta(const sm_layer *layer, uint32_t count, sm_error *error)
{
    if (layer->n_meta != count)
        return sm_fail(error, "expected %u integer metadata values for this family; the file has %u",
                       count, layer->n_meta);
    return 0;
}

int sm_expect_arrays(const sm_layer *layer, uint32_t count, sm_error *error)
{
    if (layer->n_arrays != count)
        return sm_fail(error, "expected %u arrays for this family; the file has %u", count, layer->n_arrays);
    return 0;
}

static const void *typed_array(const sm_layer *layer, uint32_t index, uint32_t dtype, uint64_t count,
                               const char *name, sm_error *error)
{
    if (index >= layer->n_arrays) {
        sm_fail(error, "array %u (%s) is missing; the file has %u arrays", index, name, layer->n_arrays);
        return NULL;
    }
    const sm_array *array = &layer->arrays[index];
    if (array->dtype != dtype) {
        sm_fail(error, "array %u (%s) must be %s; the file stores %s", index, name,
                dtype == SM_DTYPE_F32 ? "float32" : "int32", array->dtype == SM_DTYPE_F32 ? "float32" : "int32");
        return NULL;
    }
    if (array->count != count) {
        sm_fail(error, "array %u (%s) must hold %llu values for shape (%lld, %lld); the file has %llu", index,
                name, (unsigned long long)count, (long long)layer->m, (long long)layer->n,
                (unsigned long long)array->count);
        return NULL;
    }
    return array->data;
}

const float *sm_f32(const sm_layer *layer, uint32_t index, uint64_t count, const char *name, sm_error *error)
{
    return typed_array(layer, index, SM_DTYPE_F32, count, name, error);
}

const int32_t *sm_i32(const sm_layer *layer, uint32_t index, uint64_t count, const char *name, sm_error *error)
{
    return typed_array(layer, index, SM_DTYPE_I32, count, name, error);
}

int sm_check_permutation(const int32_t *order, int64_t size, const char *name, sm_error *error)
{
    unsigned char *seen = calloc((size_t)size + 1, 1);
    if (seen == NULL)
        return sm_fail(error, "out of memory checking %s", name);
    for (int64_t i = 0; i < size; ++i) {
        const int32_t k = order[i];
        if (k < 0 || (int64_t)k >= size || seen[k]) {
            free(seen);
            return sm_fail(error, "%s is not a permutation of 0..%lld (entry %lld is %ld)", name,
                           (long long)(size - 1), (long long)i, (long)k);
        }
        seen[k] = 1;
    }
    free(seen);
    return 0;
}

const sm_family *sm_find_family(uint32_t id)
{
    for (size_t k = 0; sm_families[k] != NULL; ++k)
        if (sm_families[k]->id == id)
            return sm_families[k];
    return NULL;
}

/* Little-endian decoding, independent of the host's byte order. */
static uint32_t read_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t read_u64(const unsigned char *p)
{
    return (uint64_t)read_u32(p) | (uint64_t)read_u32(p + 4) << 32;
}

static int host_is_little_endian(void)
{
    const uint32_t probe = 1;
    unsigned char first;
    memcpy(&first, &probe, 1);
    return first == 1;
}

static uint64_t align_up(uint64_t offset)
{
    return (offset + (SM_ALIGN - 1)) & ~(uint64_t)(SM_ALIGN - 1);
}

/* Read the whole file into an aligned buffer; *size_out is its length. */
static unsigned char *read_file(const char *path, uint64_t *size_out, sm_error *error)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        sm_fail(error, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    long size = -1;
    if (fseek(file, 0, SEEK_END) == 0)
        size = ftell(file);
    if (size < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fclose(file);
        sm_fail(error, "cannot determine the size of %s", path);
        return NULL;
    }
    unsigned char *buffer = sm_alloc((size_t)size + 1);
    if (buffer == NULL) {
        fclose(file);
        sm_fail(error, "out of memory reading %s (%ld bytes)", path, size);
        return NULL;
    }
    if (size > 0 && fread(buffer, 1, (size_t)size, file) != (size_t)size) {
        fclose(file);
        sm_free(buffer);
        sm_fail(error, "could not read the %ld bytes of %s", size, path);
        return NULL;
    }
    fclose(file);
    *size_out = (uint64_t)size;
    return buffer;
}

static int parse(const char *path, unsigned char *buffer, uint64_t size, sm_layer *layer, sm_error *error)
{
    if (size < SM_HEADER_BYTES)
        return sm_fail(error, "%s is truncated: %llu bytes, shorter than the %u-byte header", path,
                       (unsigned long long)size, SM_HEADER_BYTES);
    if (memcmp(buffer, SM_MAGIC, sizeof SM_MAGIC) != 0)
        return sm_fail(error, "%s is not a structmat layer file (bad magic bytes)", path);
    const uint32_t version = read_u32(buffer + 8);
    if (version != SM_FORMAT_VERSION)
        return sm_fail(error, "%s has layer format version %u; this driver reads version %u", path, version,
                       SM_FORMAT_VERSION);
    const uint32_t family_id = read_u32(buffer + 12), dtype = read_u32(buffer + 16), flags = read_u32(buffer + 20);
    const uint64_t m = read_u64(buffer + 24), n = read_u64(buffer + 32);
    const uint32_t n_meta = read_u32(buffer + 40), n_arrays = read_u32(buffer + 44);
    const uint64_t declared_size = read_u64(buffer + 48);
    if (dtype != SM_DTYPE_F32)
        return sm_fail(error, "%s has value dtype code %u; only float32 (code 1) is supported", path, dtype);
    if (flags & ~SM_FLAG_BIAS)
        return sm_fail(error, "%s has unknown flag bits 0x%x in its header", path, flags & ~SM_FLAG_BIAS);
    if (m < 1 || n < 1 || m >= (uint64_t)SM_MAX_SIDE || n >= (uint64_t)SM_MAX_SIDE)
        return sm_fail(error, "%s has shape (%llu, %llu); both sides must be in [1, 2^31)", path,
                       (unsigned long long)m, (unsigned long long)n);
    if (n_meta > SM_MAX_META || n_arrays > SM_MAX_ARRAYS)
        return sm_fail(error, "%s declares %u metadata values and %u arrays; at most %u and %u are allowed", path,
                       n_meta, n_arrays, SM_MAX_META, SM_MAX_ARRAYS);
    if (declared_size != size)
        return sm_fail(error, "%s is %s: the header says %llu bytes but the file has %llu", path,
                       size < declared_size ? "truncated" : "corrupt (longer than declared)",
                       (unsigned long long)declared_size, (unsigned long long)size);
    const int has_bias = (flags & SM_FLAG_BIAS) != 0;
    const uint32_t n_descriptors = n_arrays + (uint32_t)has_bias;
    /* the sizes below cannot overflow: n_meta < 2^24 and n_descriptors <= 2^16 + 1 */
    const uint64_t meta_offset = SM_HEADER_BYTES;
    const uint64_t table_offset = meta_offset + 8u * (uint64_t)n_meta;
    const uint64_t data_offset = align_up(table_offset + 16u * (uint64_t)n_descriptors);
    if (data_offset > size)
        return sm_fail(error, "%s is truncated: its metadata and array table need %llu bytes, the file has %llu",
                       path, (unsigned long long)data_offset, (unsigned long long)size);

    layer->meta_table_ = malloc(sizeof(int64_t) * (n_meta ? n_meta : 1));
    layer->array_table_ = malloc(sizeof(sm_array) * (n_descriptors ? n_descriptors : 1));
    if (layer->meta_table_ == NULL || layer->array_table_ == NULL)
        return sm_fail(error, "out of memory reading %s", path);
    for (uint32_t k = 0; k < n_meta; ++k) {
        const uint64_t value = read_u64(buffer + meta_offset + 8u * k);
        if (value > (uint64_t)INT64_MAX)
            return sm_fail(error, "%s: metadata value %u is negative (%lld); all metadata must be >= 0", path, k,
                           (long long)(int64_t)value);
        layer->meta_table_[k] = (int64_t)value;
    }
    uint64_t offset = data_offset;
    for (uint32_t k = 0; k < n_descriptors; ++k) {
        const unsigned char *entry = buffer + table_offset + 16u * k;
        const uint32_t array_dtype = read_u32(entry), reserved = read_u32(entry + 4);
        const uint64_t count = read_u64(entry + 8);
        const char *what = (has_bias && k == n_arrays) ? "the bias" : "an array";
        if (array_dtype != SM_DTYPE_F32 && array_dtype != SM_DTYPE_I32)
            return sm_fail(error, "%s: array %u has dtype code %u; expected 1 (float32) or 2 (int32)", path, k,
                           array_dtype);
        if (reserved != 0)
            return sm_fail(error, "%s: array %u has a non-zero reserved field; the file is corrupt", path, k);
        if (count > (size - offset) / 4u)
            return sm_fail(error, "%s is truncated: array %u (%s) of %llu values needs %llu bytes from offset %llu, "
                           "the file has %llu", path, k, what, (unsigned long long)count,
                           (unsigned long long)(4u * count), (unsigned long long)offset, (unsigned long long)size);
        layer->array_table_[k].dtype = array_dtype;
        layer->array_table_[k].count = count;
        layer->array_table_[k].data = buffer + offset;
        offset = align_up(offset + 4u * count);
        if (offset > size)
            return sm_fail(error, "%s is truncated: the padding after array %u ends past the file", path, k);
    }
    if (offset != size)
        return sm_fail(error, "%s is corrupt: its arrays end at byte %llu but the file has %llu bytes", path,
                       (unsigned long long)offset, (unsigned long long)size);
    layer->family_id = family_id;
    layer->m = (int64_t)m;
    layer->n = (int64_t)n;
    layer->n_meta = n_meta;
    layer->meta = layer->meta_table_;
    layer->n_arrays = n_arrays;
    layer->arrays = layer->array_table_;
    layer->bias = NULL;
    if (has_bias) {
        const sm_array *bias = &layer->array_table_[n_arrays];
        if (bias->dtype != SM_DTYPE_F32 || bias->count != m)
            return sm_fail(error, "%s: the bias must be %llu float32 values (one per output); it has %llu", path,
                           (unsigned long long)m, (unsigned long long)bias->count);
        layer->bias = bias->data;
    }
    return 0;
}

int sm_load_layer(const char *path, sm_layer *layer, const sm_family **family, sm_error *error)
{
    memset(layer, 0, sizeof *layer);
    *family = NULL;
    if (!host_is_little_endian())
        return sm_fail(error, "this driver needs a little-endian host (layer files store little-endian floats)");
    uint64_t size = 0;
    unsigned char *buffer = read_file(path, &size, error);
    if (buffer == NULL)
        return -1;
    layer->storage_ = buffer;
    if (parse(path, buffer, size, layer, error) != 0) {
        sm_free_layer(layer, NULL);
        return -1;
    }
    const sm_family *found = sm_find_family(layer->family_id);
    if (found == NULL) {
        char known[256] = "";
        size_t used = 0;
        for (size_t k = 0; sm_families[k] != NULL && used < sizeof known; ++k)
            used += (size_t)snprintf(known + used, sizeof known - used, "%s%u=%s", k ? ", " : "",
                                     sm_families[k]->id, sm_families[k]->name);
        sm_fail(error, "%s has family id %u, which this driver has no kernel for (known: %s)", path,
                layer->family_id, known);
        sm_free_layer(layer, NULL);
        return -1;
    }
    if (found->prepare(layer, error) != 0) {
        char detail[sizeof error->message];
        memcpy(detail, error->message, sizeof detail);
        sm_fail(error, "%s is not a valid %s layer: %s", path, found->name, detail);
        sm_free_layer(layer, NULL); /* a failing prepare frees what it allocated */
        return -1;
    }
    *family = found;
    return 0;
}

void sm_free_layer(sm_layer *layer, const sm_family *family)
{
    if (family != NULL && family->release != NULL)
        family->release(layer);
    free(layer->meta_table_);
    free(layer->array_table_);
    sm_free(layer->storage_);
    memset(layer, 0, sizeof *layer);
}

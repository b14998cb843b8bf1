/* Made by tests/unit/fixtures/make_jwt_fixtures.py: do not edit. */
/* clang-format off */
static const char RSA_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2qSeRlqJdp7PFxrveeX3\n"
    "XcPXbrGjYNvD7c9ar4HUyZrIIMBfqwVDh6/hdWeVexztvd+uz6PEqYSiWCwQDyD+\n"
    "UAGfsAvD3AUnQaFnoW971Wg9vmsW24CfQDngdpCsKAIeWLGFqCoBS5yfXYOVXbqA\n"
    "ffkKEkzM3/QSze5gVEqzMujjpn9suVchflYkPWnkaAVych1GTQpL+cHq5zY886aq\n"
    "88ebK/pfObKvqEZAuRCVFFLmXVZxLqaIUiseCwkHMPI5l5GsCyx9HGKbcq0uaP7N\n"
    "rGn6hNFd9dAQzndYWh45GXByE8yf073JBLP/pqyNXC0o4q/kSFZs2QawWm4gYJQk\n"
    "NQIDAQAB\n"
    "-----END PUBLIC KEY-----";

static const char EC_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVynXOY6ZARFhK74/y48bSN+pex2g\n"
    "LVq0VvSkQ0CMSYvxXf926GPkQwjd6jeCuo4lhyWa3ijvIdwV4e6QMs2zsA==\n"
    "-----END PUBLIC KEY-----";

static const char RSA1024_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDLgANGAsYAYpVSpyH1Bst91bmI\n"
    "EC+mdSNAbC4q9jlAZr9trT4Bq2Yrq34pOYnJwHXJ8ta+PwnWneFZPVst/ktL+OFN\n"
    "N7WeTAcn6yLbOQuLtblGHz5MsYXyJGPvZ16n5dIffkT2BR1zn4Eveu+lnC3wplWa\n"
    "6L8wdNm3aoCL8OLNUwIDAQAB\n"
    "-----END PUBLIC KEY-----";

static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa-1\",\"n\":\"2qSeRlqJdp7PFxrveeX3XcPXbrGjYNvD7c9ar4HUyZrIIMBfqwVDh6_hdWeVexztvd-uz6PEqYSiWCwQDyD-UAGfsAvD3AUnQaFnoW971Wg9vmsW24CfQDngdpCsKAIeWLGFqCoBS5yfXYOVXbqAffkKEkzM3_QSze5gVEqzMujjpn9suVchflYkPWnkaAVych1GTQpL-cHq5zY886aq88ebK_pfObKvqEZAuRCVFFLmXVZxLqaIUiseCwkHMPI5l5GsCyx9HGKbcq0uaP7NrGn6hNFd9dAQzndYWh45GXByE8yf073JBLP_pqyNXC0o4q_kSFZs2QawWm4gYJQkNQ\",\"e\":\"AQAB\",\"use\":\"sig\",\"alg\":\"RS256\"},{\"kty\":\"EC\",\"kid\":\"ec-1\",\"crv\":\"P-256\",\"x\":\"VynXOY6ZARFhK74_y48bSN-pex2gLVq0VvSkQ0CMSYs\",\"y\":\"8V3_duhj5EMI3eo3grqOJYclmt4o7yHcFeHukDLNs7A\"},{\"kty\":\"EC\",\"kid\":\"ec-2\",\"crv\":\"P-256\",\"x\":\"f07qdllQlT_qp02duXNk3ut5YGq7CHqpr8p_bp8X2tY\",\"y\":\"ohx3mYAENFTpK6k__gDaVKUmaY2e0DThqNYaYVy7_w8\"},{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},{\"kty\":\"oct\",\"kid\":\"sym\",\"k\":\"c2VjcmV0\"}]}";

static const char TOK_RS256[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.ZaL3UxkhTISNVj73H06Gd0OLvG0eMDTrJf7sR_KRJckwi-vGE6-tHABPFyXmemCOKmaRyxthPnkuOAMADlRWEnKaISRbg4fjKls3JJ_BlCjEEF24WQZj1yBSlp9b9Yq69EdbCoIwZvSmiWT87gBmKwFSNv_Kj-HTuUtSjQAQTdrswdyjlhcZZzUZ2ygyweWN6-OW9w6cVi4bmgvBj1QvzlfyewjbAqdvtTiqynxdN6i1wnrhF8l6z4MuHZQR0onPmrJ04LRteyBXzd15CmzEsjxJHqTeDerFshKP5JUGDErohQo5T1Km8dTaqUEck6S37qpddt9btdfGlBzKYQxXjw";

static const char TOK_RS256_KID[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.t2TPS6pS0QMCoryqZwBypVY9a_r_3llTI4JH3BBHxpKhxQe7LThkd-fHF1Ahwg33HV8su86FsRFSCsLpvoCqpDFhsxYTfZrreAo_62zW8n62cgakKVFkH71rYctTx3hJ4JSi4aC7Q6geh6-TmrPYbIEaEZeDZ_8PliFcD8CyHbJhsVKGSRYDABE4WPdA8aU03AHXa3R-kehCt2y-tXWycN0j4NJ56porWzMRhf-5lzoeRaFp-wXbKGXjUDwxJROQte31SkMkldNIObW11ph214QNgA026LCO89ReuCHQLDTwZA8dBb6cVkJY585Pasy-s8YhXdm97ce0RrTcapHCZg";

static const char TOK_ES256_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTEifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.Siv3w3JWZaY_oUoBme4teTzzKhwbdwEiS0yEGvszCBlFStA0hH6hqxPVqEoSFV08OLlYcdfCABWyAjPR6z18Jw";

static const char TOK_ES256_NOKID[] =
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.tm9x4zjVnkytlSulzhI--rgpdmjSYSKC9U0X0OIk1I9GawO2tp2pt7XpwWiTozBj28yGRXZp2yVbtUObkhAo8w";

static const char TOK_ES256_WRONG_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTIifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.UmdCVoSZQm8_SW1CDp5Fdzg708W6aM2Tl__hGb0iAsbvtOQp1m-j9FIR74zQra-0CtiyL5hhJIN0ZGY_L6bU0A";

static const char TOK_ES256_UNKNOWN_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.9KxirLZlwncgAMytMDSj0NAjBtUeb294XhLSrw1sOVNWoYMngjw7udV2wSkj6lCkNXdTgLVu3GYmmYv3sCODlQ";

static const char TOK_ES256_AS_RS256[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.Xoty8253dw39TmDbIbsWkpT2S8CUCeLN5zX_3D78EFK6OeFnSqecr9r0yaWw6RfawP2JvPwfWv4cl6xjgLubTA";

static const char TOK_RS256_AUD_STRING[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOiJoZXJhbGQifQ.ujcKmQFhtmFZ83HKcxIgTEb8h0crj30ajYe5sPy4fQuZ7N8fCmkhkkHXCMIhQsE3nXcbsAMvK5OmPCTjtP4WvihBhIVQRHWOrFKZI4j7-njD25UZ2KRFeXktIgwadIe0tgeNl-MpXIepB6VM1_DnGFOWFOSDQhk-kcE2K2gX3lJJMV-UprNypXd6KlBKDSyhau4kL1DMLOvdoh5OJjxEnV_EFP-QcNW2eS1-8bsa16S5XdQoDGulRD216pgTe8sd8CZa1-6w8XSePUD6665ECklwodiK5NosfVMlKbSVJoIn8may2eATY90EDN3JT3MVXBSmR7DtrjY0FOY1kIjTxQ";

static const char TOK_RS256_WRONG_AUD[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOiJvdGhlciJ9.0tZM9zlfLr66Gh_S3qkdt1fpyAFWPwaeFpM004j_kBtRNMPBfhRNL__kxoI2HxXh6tF4ZH6jfgN9i7KwEPzaYJdP7ZCWc_LI_jx631L57Stk1nEw42BrhzE_NW2WXyL5k45r7kgLn-3-l0ecqPx7HtddMwmZM0YUGYOSBVnZX2eNfM-gmyyQMOfkpzS9ZIUzsIYL5yJ2FPmeq-GbnB4a_1JtRhryrGU_RDxgvPqqUzQ4waBXSrPgj1hj9d7IMq5T3cEsYTM3EwFA1y2ouu-5JjhkXk6SItSpmL9DHDn0mZV8InWJMWWVFnYDHjqUIqjAK-AZ7oWDbFt9RnCwyOqI8A";

static const char TOK_RS256_NO_ISS[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImF1ZCI6WyJvdGhlciIsImhlcmFsZCJdfQ.kfner4Os7B-UI4-5qSG4wZXLHJJpIRvPDsGs2HYcc1He-x9kaEuamdplDeizQQbCRHMtnql2riq9oqXslGlk5YpBSxp-NbrxsbyOZ8eWGixR2Zl5E0Lti4e9ZEJVznLgI_6UlEbmcxD0lEW4SagBEAJD3Uke7BF88FC7XLtcax7w9bsF2imhZYFWxkNlkbY_rORij5P8vzQAbh0NjzXhuzN5hIpD6YIUMCQOX7rOAsvE89R9yDRPgGp-wFPM25KxuaeEghwnztcPlG7kBA3qs-fBUQ2iXJx8ZSuXZMWGjMY6SUyK3PVOiHFaAPA1yoEUpK6iOTx4HVKz3GY2wzsqhA";
/* clang-format on */

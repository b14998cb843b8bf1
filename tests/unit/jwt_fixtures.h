/* Made by tests/unit/fixtures/make_jwt_fixtures.py: do not edit. */
static const char RSA_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq2uHAUimKdr7JSpZUAIk\n"
    "0CQZMvfnP9nExNSs7gZFA8rVwM1h9sGlHWAYnvRAKxrzEyCtVmMXnMWWBiTBH1Xv\n"
    "+l2ir1xT1ZquPSELOAoe7bMBl9Q1Ceit2LrHEwJETS5dyvUctQpCejA3jv3mJe7h\n"
    "ti4AX8SD/8vvOk8khpYtIXoBwszpUKnFhjlAOBOn3VtbCPTjCU6AvRM/qpcOxGVj\n"
    "Nwm8cTgwqOUKcBoNZXIVhdLvYQiSsd4tvB6ajnxLsrx7VaqTzUdKQ/BHYy2EUiRY\n"
    "w7NlmYoUAtpGjMoZkb7/mlFODjHxeH47zTTxGdnnJ3kc8D75B/+Rl86GaqYWJi7B\n"
    "tQIDAQAB\n"
    "-----END PUBLIC KEY-----";

static const char EC_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEmbwCBiki178Id33Qpq/Qi4u8fQCd\n"
    "Ezq4duS6T3i0Bp0M5TzRk8Uq7lKfkEZGGkqr0++IATZDW0CtrgwR+C/CoQ==\n"
    "-----END PUBLIC KEY-----";

static const char RSA1024_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDC9sdqLj7MyYgu+YBX/ffQfjKp\n"
    "X8jLmyB3ZktZFiNd7PRuvICKVLkT5qeDL+3eKnR9O2MoTstj2Nhop2yJIqO6BeI1\n"
    "iM7Pt4jZuXhQR/5BE9ZFb6hrlmF6MdHF9J5+WL460FvmNWKd2uKE/xUUuCw02XLd\n"
    "Z8HsONE8YGl7oak4rQIDAQAB\n"
    "-----END PUBLIC KEY-----";

static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa-1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"q2uHAUimKdr7JSpZUAIk0CQZMvfnP9nExNSs7gZFA8rVwM1h9sGlHWAYnvRAKxrzEyCtVmMXnMWWBiTBH1Xv-l2ir1xT1ZquPSELOAoe7bMBl9Q1Ceit2LrHEwJETS5dyvUctQpCejA3jv3mJe7hti4AX8SD_8vvOk8khpYtIXoBwszpUKnFhjlAOBOn3VtbCPTjCU6AvRM_qpcOxGVjNwm8cTgwqOUKcBoNZXIVhdLvYQiSsd4tvB6ajnxLsrx7VaqTzUdKQ_BHYy2EUiRYw7NlmYoUAtpGjMoZkb7_mlFODjHxeH47zTTxGdnnJ3kc8D75B_-Rl86GaqYWJi7BtQ\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"ec-1\",\"crv\":\"P-256\",\"x\":\"mbwCBiki178Id33Qpq_Qi4u8fQCdEzq4duS6T3i0Bp0\",\"y\":\"DOU80ZPFKu5Sn5BGRhpKq9PviAE2Q1tAra4MEfgvwqE\"},{\"kty\":\"EC\",\"kid\":\"ec-2\",\"crv\":\"P-256\",\"x\":\"KFWODdtU5e0_0NQU7eK68NL3qWNWtYEgqZxr8r-p8Hw\",\"y\":\"DpQRhuPFk-wyq-4SL2iNWP9LIcIns9saHMhPTx2bsLE\"},{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},{\"kty\":\"oct\",\"kid\":\"sym\",\"k\":\"c2VjcmV0\"}]}";

static const char TOK_RS256[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.DCWPA39Lw2LbulcgcCFpFVb-zW8LdL4UxX0jz89SbraP_TAz9BLNVL5lJa-_cqZqwtjEthGcQp2OAZvVB9b37ZS2FUk88_HB3qsYNphFXLKirsy72PriLIhHgC5OP8EsV2yPpZv8HTY5CkqQfE3K0WM0pjBnpB9P2KIwcXln5Kgz3RU9eXibvjxYC8KYoRfJF44TeKxtcbGNlx0860I9KCk5TfDcluaVpP--Dgt3NshImlfQGcdZr99cGGBsl3ES8FOOi9MHF61JDZNcNFlNft9yru3EjUqojGtlxfl0mLT9GtioINhneLTCiPv1r2-t5jO12FMPOFJTEtfWDa_obg";

static const char TOK_RS256_KID[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.EyiIrozC_nkc7OlcDs_0bxdNblx0GChnHdl-eMApd_FuV63XnSCAdgaIJe_E35Z49DU0EyN6FKw0ftJ2KALaLD6ML7O2EmFdejz-TEYcaaz8Ye6Hn20WfieGv8S8ugm_ig-lVeFhSscHRAgGVsyr0IQHQ_D1rSPxpSBEoVm8fa-fVhPjvjo4cgBx1b0Xydq9bmRMe9eQmaRuWKeGNQnV02-ET_OdEJVf5IKXikitrL-_yUaE4u7xUY232UYWp_ZS-ZdP_6K81nj4Ax42Fu0Rug75QlNKuVmJ-jkGda2KmwxcIfdgFk8d-gW1mcOfEdj3rvGeTGYq9LcSTCmLlilbNg";

static const char TOK_ES256_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTEifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.7Ja3tWuzcBaDjxbMO51oUwl4jscz2vIMfixNzjutyMuE0r8SOPd7ohGyXOrS1Wi-BcMHQC2IxupY-mB2ujjvDg";

static const char TOK_ES256_NOKID[] =
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.a1G8glPCp71JKTCoSX3Zn9_dC2l_JwnCGu_y0avrUEyH__7S349d4mvx0w3YyBxmO6RSm1AqmRiSZ2PxwqDfdw";

static const char TOK_ES256_WRONG_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTIifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.KLOH2Ublfwmjrs1P88YDJHNnFXlxLcLkjVRrAAp-_7Nw0BjSIdLVJ_ciDCaOMk0ZCsfM3PwSh1vbOoiVCFC51Q";

static const char TOK_ES256_UNKNOWN_KID[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.DS9jEHOfxrYM2wj5UvahGj2ozHcGIXBid80s_08hXP8G7ruRKs95ivvRfU3pmQOsvO5OBGHg40DDUFdVG6jDOQ";

static const char TOK_ES256_AS_RS256[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOlsib3RoZXIiLCJoZXJhbGQiXX0.LTA-k8DI4-FOxwHztSkAHxCuFD9ScGyemNEGgvvEkLkOUGznronqxThCA0ZIDi3BfOON_P_vFkQ1lJhc3BxzLw";

static const char TOK_RS256_AUD_STRING[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOiJoZXJhbGQifQ.X-hbG8dIL0fspf7Z7IIc6Yvp7ztDFxB40Vrq7VNb97wD8tVNXMt531p_mmmuHxIl2xkbJU6NVLj6LD6uOTDHsAU7c0FCDMZBcTgJyZFygbIiZCXllzxU8WeLlttybNI8CuOg2OPVyjh0Zt_LGj71bK1tnpE92tLkfiilvQ_j3wbecUzLE6fOU-FlzSLYk3ysTPaAFx4QIBNbO0XaGPoRupyYTk26-cwv43tHh1fVAyj8Q1jnlbRAoryhsZw7RZ_59Fc8DJJ4jSx83QQcvezLKg6QG_ODfLcGZYMIf2XxVL55JNtXtTEiH1gO8WB0sZFyqPlbsZd3eb0bCdCGpLwm5w";

static const char TOK_RS256_WRONG_AUD[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImlzcyI6Imh0dHBzOi8vaWRwLmV4YW1wbGUiLCJhdWQiOiJvdGhlciJ9.WaJrBIUNC0uYetWO2xLyh7C2869MoQHuJN-kFZPZfp5DrMf2ESB-cRebP328DStoBpZ14eoG-TCLwill9IrHbUMIO-17k7WYFI2aGDY8EIrjOmCNsEGjmY0DQHLHbjRpKySRvyewThnKif88xUd6xuriY6IAhUT6uhbBIFbjnrz6ndYBTYfjI_kWfTI8JAG1VdZkOWQ4K5AQaTc_mgBJhOWcgYQSjnqonEMUGPTz1iZeG8uLW-yOroeHWLmDm0tftJCzZ_-sQ9YxgGkBnpndfm2crW2qYCgTZeypfw98GS5ky0t6EWxepmZS3SGrcscDNZGHqIzYpfBVMGkIb1AY1g";

static const char TOK_RS256_NO_ISS[] =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiY2hhbm5lbHMiOlsicm9vbToqIl0sImF1ZCI6WyJvdGhlciIsImhlcmFsZCJdfQ.AhYYslnekk7E599wCbvUyhjIdIZ62zknmHwq9_bIl5ykotOnE3YV-pacxagzx5AUvbrAGMMmm8dUK_NYlIrazR9qaKv665PIGx37dlsYNmLvZZjd-iV5pL-5T5lwOTVvhu5t1xC8O6VQI_rCAoDQLzo7Wbp2ZvP_Xl9ZPqHs5fOZUA-t9mz8LDic3MWACk34L09butF-VdcQn4U7J9ymt3tYA9fiWEmU5J9y2dpccTYvWUbVHrUltiONnrkL3z8ifpuAqYxjk32PLlzDfwrn-lrtYNWL_t6X8tkRbYtd83m9B3N832e_k8HN0SXYczSVuVT5vonzSnyyTA0mIGNVpg";

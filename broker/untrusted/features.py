"""The detector's sentence features: each a weighted pattern, see ``detect`` for the scoring.

Three tables: PRIMARY features say something only text addressed to a model says (addressing
it, overriding its instructions, asking it to send data out, ...); SUPPORTING ones are common
in ordinary mail and count only in a sentence that has a primary one; TASK_FEATURES describe
off-topic tasks and knowledge questions, reported apart with low confidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.untrusted.vocabulary import (
    ARTIFACTS,
    BEGIN,
    CODE_OUTPUT,
    CONTENT_NOUNS,
    DESTINATION,
    DIRECT_SHAPING,
    KNOWLEDGE,
    LANGUAGE_WORDS,
    LANGUAGES,
    LEAD_CLAUSE,
    MODEL,
    MODEL_GENERIC,
    MODEL_WEAK,
    MODEL_WORDS,
    OUTPUT,
    OUTPUT_STRONG,
    OUTPUT_WORDS,
    SEND_VERBS,
    SENSITIVE,
    SHAPING_VERBS,
    START,
    VOCATIVE_END,
    any_of,
    gap,
)


@dataclass(frozen=True)
class Feature:
    """A pattern, its weight, and the words it cannot match without: one word of each group
    must be among the text's words, else the (slower) pattern is not run at all."""

    name: str
    weight: int
    needs: tuple[frozenset[str], ...]
    pattern: re.Pattern[str]
    unless_before: re.Pattern[str] | None = None  # searched in the sentence before a match
    unless_after: re.Pattern[str] | None = None  # searched in a match and what follows it

    def may_match(self, words: set[str]) -> bool:
        return all(not words.isdisjoint(group) for group in self.needs)


def _feature(
    name: str,
    weight: int,
    needs: tuple[str, ...],
    pattern: str,
    *,
    unless_before: str = "",
    unless_after: str = "",
) -> Feature:
    groups = tuple(frozenset(group.split()) for group in needs)
    return Feature(
        name,
        weight,
        groups,
        re.compile(pattern, re.M),
        re.compile(unless_before) if unless_before else None,
        re.compile(unless_after) if unless_after else None,
    )


# Security advice and warnings describe the very requests injections make ("never send your
# password to anyone", "if someone asks you to wire money to a new account"): a negation or
# a conditional shortly before such a request disarms it.
_WARNING_CONTEXT = (
    r"(?:\bnot|n't|\bnever|\bno one|\bnobody|\bif (?:someone|anyone|somebody|you are|you're|"
    r"asked)|\basks? you|\basking you|\bbeware|\bscams?|\bphishing|\bfraud)\b"
)


_INJECTION_FEATURES = (
    _feature(
        "override",
        3,
        (
            (
                "ignore disregard forget override overrides overrule bypass skip discard abandon "
                "neglect follow following obey cancel supersede supersedes replace replaces "
                "takes overwrite overwrites"
            ),
            (
                "instruction instructions prompt prompts rules directions directive directives "
                "guidelines guidance commands orders context constraints programming policies "
                "restrictions message"
            ),
        ),
        any_of(
            "ignore|disregard|forget|overrides?|overrule|bypass|skip|discard|abandon|neglect|"
            "do not follow|don't follow|stop following|do not obey|don't obey|cancel|"
            "supersedes?|replaces?|takes precedence over|overwrites?"
        )
        + gap(3)
        + any_of(
            "previous|prior|preceding|above|earlier|former|original|initial|existing|system|all|"
            "any|every|your|these|those|the"
        )
        + gap(2)
        + any_of(
            "instructions?|prompts?|rules|directions|directives?|guidelines|guidance|commands|"
            "orders|context|constraints|programming|policies|restrictions|system message"
        )
        + r"\b",
        # "disregard my previous instructions", "ignore the previous instructions for the
        # expense form": a person correcting their own mail, not an override.
        unless_before=r"(?:\bnot|n't|\bnever)\W{0,3}$",
        unless_after=r"\b(?:my|our)\b|\b(?:instructions?|rules|directions|guidelines|guidance|"
        r"policies|commands|orders) (?:for|about|on|regarding|re|i|we|sent)\b(?! (?:the |this |"
        r"any |an? |all )?(?:ai|assistant|model|agent|llm|bot|chatbot|you)\b)",
    ),
    _feature(
        "override",
        2,
        ("forget ignore disregard", "everything all what whatever email message text"),
        r"\b(?:forget|ignore|disregard) (?:everything|all(?: of)? (?:that|this|the above))\b"
        r"|\b(?:forget|ignore|disregard) (?:the |this )?(?:email|message|text) (?:above|below)\b",
    ),
    _feature(
        "override",
        3,
        ("forget ignore disregard", "told given instructed taught"),
        r"\b(?:forget|ignore|disregard) (?:everything |all |whatever |what )(?:you (?:were|have "
        r"been|are|had been) (?:told|given|instructed|taught))\b",
    ),
    _feature(
        "new instructions",
        3,
        (
            (
                "instruction instructions directive directives task objective prompt orders goal "
                "job purpose role mission now"
            ),
        ),
        r"\b(?:new|updated|real|actual|true|hidden|secret|revised|additional) (?:system )?"
        r"(?:instructions?|directives?|task|objective|prompt|orders)"
        r"(?: for (?:the |you, )?" + MODEL + r"| from (?:the )?(?:system|developer|admin))\b"
        r"|\byour (?:new|real|actual|true|only|primary|main|current) (?:task|goal|job|"
        r"objective|purpose|instructions?|role|mission|directive)s? (?:is|are|will be|now)\b"
        r"|\byour (?:task|goal|job|objective|purpose|mission|role) (?:now|from now on|instead) "
        r"(?:is|will be)\b"
        r"|\byour (?:instructions|rules|guidelines|orders|task|role|programming|directives) "
        r"(?:have|has) (?:changed|been (?:changed|updated|replaced|revoked|overridden))\b"
        r"|\bfrom now on,? (?:you|the " + MODEL + r") (?:are|will|must|should|shall|can)"
        r" (?:only |now |always )?(?:act|respond|answer|reply|behave|pretend|be|follow|"
        r"ignore|obey|speak|write|output|say)\b",
    ),
    _feature(
        "new instructions",
        2,
        ("instruction instructions task directive directives",),
        BEGIN + r"\s{0,3}+(?:new|updated|important|additional) "
        r"(?:instructions?|task|directives?)\s{0,2}+:",
    ),
    _feature(
        "role play",
        2,
        ("now act pretend role roleplay simulate",),
        r"\b(?:you are now|act as|pretend (?:to be|you are|that you are)|role-?play as|"
        r"you will now act as|simulate being) (?:a|an|the|my)\b",
    ),
    _feature(
        "addresses the model",
        3,
        (MODEL_WORDS,),
        r"\b(?:dear|hey|hi|hello|attention|attn|note (?:to|for)|message (?:to|for)|"
        r"instructions? (?:to|for)|reminder (?:to|for)|notice (?:to|for)|p\.?s\.? (?:to|for))"
        r"\s?:?\s(?:the |any |all |an |my |our )?"
        + MODEL_GENERIC
        + VOCATIVE_END
        + r"|\b(?:this|the following) (?:message|email|text|note|section) is (?:for|addressed "
        r"to|intended for|meant for) (?:the |any |an? )?" + MODEL + r"\b"
        r"|\b(?:if|when|while|since) you are (?:an? |the )?(?:"
        + MODEL
        + r"|automated (?:system|agent|assistant))\b"
        r"|\byou are (?:an? |the )?(?:" + MODEL + r")(?=\s{0,3}+(?:[.,;:!]|and\b|who\b|"
        r"that\b|which\b|reading\b|processing\b|$))"
        r"|\b" + MODEL + r" (?:is |are )?(?:reading|processing|parsing|summari[sz]ing|"
        r"analy[sz]ing|handling|viewing|seeing|reviewing|reads|processes|parses|summari[sz]es|"
        r"analy[sz]es|handles|manages|monitors|reviews|sees) (?:this|these|my|the (?:email|"
        r"message|document|page|text|content|inbox|mailbox|thread))\b"
        + "|"
        + BEGIN
        + r"[\s\"'“(*#>-]{0,4}+(?:"
        + MODEL_GENERIC
        + r"|copilot|chatgpt)\s?,"
        + r"|\b(?:dear|hey|hi|hello) (?:copilot|chatgpt)\b",
    ),
    _feature(
        "addresses the model",
        2,
        (MODEL_WORDS,),
        r"\b(?:dear|hey|hi|hello|attention|note (?:to|for)|message (?:to|for)|instructions? "
        r"(?:to|for))\s?:?\s(?:the |any |all )?"
        + MODEL_WEAK
        + VOCATIVE_END
        + r"|\b(?:if|when|while|since) you are (?:an? |the )?"
        + MODEL_WEAK
        + r"\b"
        + "|"
        + BEGIN
        + r"[\s\"'“(*#>-]{0,4}+"
        + MODEL_WEAK
        + r"\s?,"
        r"|\b(?:the|this|any) " + MODEL + r" (?:must|should|shall|needs? to|is (?:required|"
        r"instructed|directed|expected) to|has to)\b"
        r"|\bas an? (?:ai|large language model|language model|llm|ai assistant)\b"
        r"|\b(?:" + MODEL + "|" + MODEL_WEAK + r") (?:instructions?|directives?|commands?|"
        r"tasks?|orders?)\s?:",
    ),
    _feature(
        "keep it from the user",
        3,
        ("user users human humans operator operators principal principals",),
        r"\b(?:do not|don't|never) (?:tell|inform|notify|alert|mention (?:this|it) to|reveal "
        r"(?:this|it) to|show (?:this|it) to|ask|confirm with|let|consult|warn) (?:the |your )?"
        r"(?:user|human|operator|principal)s?\b(?! (?:id|name|account|guide|manual)\b)"
        r"|\b(?:the|your) user (?:has )?(?:already )?(?:authori[sz]ed|approved|wants|asked|"
        r"requested|instructed|consented|allowed|permitted) (?:you|this|that|it)\b",
    ),
    _feature(
        "keep it from the user",
        2,
        ("user users human humans operator operators principal principals",),
        r"\bwithout (?:telling|informing|notifying|alerting|asking|consulting|warning) "
        r"(?:the |your )?(?:user|human|operator|principal)s?\b",
    ),
    _feature(
        "addresses the model",
        3,
        (
            "when while before after once",
            "process processing summarize summarise summarizing "
            "summarising parse parsing analyze analyse analyzing analysing ingest ingesting handle "
            "handling",
        ),
        r"\b(?:when|while|before|after|once) (?:you )?(?:process(?:ing)?|summari[sz](?:e|ing)|"
        r"pars(?:e|ing)|analy[sz](?:e|ing)|ingest(?:ing)?|handl(?:e|ing)) (?:this|these|the "
        r"(?:following|above|below)) (?:email|message|document|page|text|content|thread|mail)s?\b",
    ),
    _feature(
        "speaks of the user",
        2,
        ("user users",),
        # "the user" as a third party the reader serves: how prompts, not people, write.
        r"\b(?:tell|inform|respond to|reply to|answer|show|remind|warn|convince|persuade|ask|"
        r"notify|assure|reassure|mislead|trick) (?:the|your) user(?:s|'s)?\b"
        r"|\bthe user(?:'s)? (?:real|actual|true|hidden) (?:request|question|intent|task|goal)\b",
    ),
    _feature(
        "runs a program",
        2,
        ("download open run execute install launch", "exe msi scr bat ps sh apk dmg pkg jar vbs"),
        r"\b(?:download|open|run|execute|install|launch)\b[^\n]{0,80}?\.(?:exe|msi|scr|bat|ps1|"
        r"sh|apk|dmg|pkg|jar|vbs)\b[^\n]{0,40}?\b(?:run|execute|install|launch|open)\b",
    ),
    _feature(
        "hidden copy",
        2,
        ("add include put set insert", "bcc cc"),
        r"\b(?:add|include|put|set|insert)\b[^.\n]{0,30}\bbcc\b",
    ),
    _feature(
        "addresses the model",
        3,
        (MODEL_WORDS,),
        r"\b(?:to|for) (?:the|any|all|every) " + MODEL_GENERIC + r"\s?:"
        r"|\b(?:to|for) (?:whichever|whatever|any|the|every) " + MODEL + r" (?:that |who )?"
        r"(?:handles|reads|processes|manages|monitors|reviews|summari[sz]es|sees|gets)\b"
        r"|\b(?:" + MODEL + "|" + MODEL_WEAK + r") (?:directives?|commands?|orders?)\s?:",
    ),
    _feature(
        "addresses the model",
        2,
        (MODEL_WORDS,),
        # "Assistant: ..." or "AI - ..." opening a line; also how newsletter headings start.
        BEGIN + r"[\s\"'“(*#>!-]{0,4}+" + MODEL_GENERIC + r"\s?(?::|—| -)\s",
    ),
    _feature(
        "overrides the user",
        3,
        ("disregard ignore override forget overrule", "user users"),
        r"\b(?:disregard|ignore|override|forget|overrule) (?:the|your) user'?s? (?:request|"
        r"question|instructions?|wishes|task|orders?|intent)s?\b",
    ),
    _feature(
        "claims new rights",
        2,
        ("granted given", "rights access permissions privileges"),
        r"\byou (?:have been|are|were|now) (?:granted|given) (?:full |admin(?:istrator)? |"
        r"elevated |special |root |unrestricted |extra )?(?:rights|access|permissions|"
        r"privileges)\b",
    ),
    _feature(
        "reaches for everything",
        2,
        ("access see read reach open",),
        r"\b(?:every|all|any) (?:the )?(?:files?|documents?|data|emails?|messages?|secrets?|"
        r"folders?|records?|systems?|tools?)(?: that)? you (?:can|could|are able to|have) "
        r"(?:access|see|read|reach|open)\b",
    ),
    _feature(
        "encode into a link",
        3,
        ("base encode encoded hex urlencode", "url link address query parameter"),
        r"\b(?:base-?64|hex|url-?encode\w{0,4}+|encode\w{0,2}+)\b[^.\n]{0,80}?\b(?:append|add|"
        r"attach|put|include|insert)\b[^.\n]{0,40}?\b(?:url|link|address|query|parameter)s?\b",
    ),
    _feature(
        "asks for secrets",
        2,
        ("output print show display list dump reveal",),
        r"\b(?:output|print|show|display|list|dump|reveal)\b(?: me)? (?:all |every |any )?(?:the |"
        r"your )?(?:stored |saved |cached |known |internal )?(?:secrets|credentials|passwords|"
        r"api keys|tokens|private keys|environment variables)\b",
    ),
    _feature(
        "secretly",
        2,
        ("silently secretly quietly covertly discreetly invisibly",),
        r"\b(?:silently|secretly|quietly|covertly|discreetly|invisibly) (?:send|forward|add|"
        r"include|copy|bcc|transfer|delete|remove|execute|run|click|open|visit|approve|"
        r"change|upload|share)\b",
    ),
    _feature(
        "exfiltration request",
        3,
        ("to at into via using on",),
        r"\b" + SEND_VERBS + gap(4) + SENSITIVE + r"\b" + r"(?:" + gap(8) + r")?"
        r"(?:to|at|into|via|using|on)\s{1,3}+" + DESTINATION,
        unless_before=_WARNING_CONTEXT,
    ),
    _feature(
        "reveal the prompt",
        3,
        ("prompt instructions message",),
        r"\b(?:reveal|print|repeat|output|show|disclose|leak|display|recite|tell me|share) "
        r"(?:me )?(?:all )?(?:of )?(?:your|the) (?:system prompt|(?:initial|original|hidden|"
        r"full|complete|exact) (?:prompt|instructions)|instructions you were given|"
        r"(?:system|developer) (?:message|instructions))\b",
    ),
    _feature(
        "sensitive data request",
        1,
        (),
        r"\b" + SEND_VERBS + gap(4) + SENSITIVE + r"\b",
        unless_before=_WARNING_CONTEXT,
    ),
    _feature(
        "payment redirection",
        2,
        ("pay wire transfer send remit move deposit", "to into"),
        r"\b(?:pay|wire|transfer|send|remit|move|deposit)\b"
        + gap(4)
        + r"(?:(?:(?<=[$€£])|[$€£]) ?[0-9][0-9,.]*+|usd\b|eur\b|gbp\b|btc\b|eth\b|usdt\b|"
        r"funds?\b|money\b|payments?\b|"
        r"amount\b|balance\b|bitcoin\b|crypto\b|[0-9][0-9,.]*+ ?(?:dollars|euros|pounds)\b)"
        + r"(?:"
        + gap(6)
        + r")?"
        r"(?:to|into)\s{1,3}+(?:(?:the|this|my|our|a|new|following|below|updated|different) )"
        r"{0,3}+(?:account|iban|wallet|address|beneficiary|recipient|bank|[a-z]{2}[0-9]{2}|"
        r"bc1|0x[0-9a-f])",
        unless_before=_WARNING_CONTEXT,
    ),
    _feature(
        "urgency",
        1,
        (
            (
                "urgent urgently immediately right once asap delay soon time critical critically "
                "priority now late final failure else must important exceptions"
            ),
        ),
        r"\b(?:urgent(?:ly)?|immediately|right away|right now|at once|asap|without delay|"
        r"as soon as possible|time[ -]sensitive|critical(?:ly)?|top priority|do it now|"
        r"before it'?s too late|final (?:notice|warning)|failure to comply|or else|"
        r"must be done|this is (?:very |extremely )?important|no exceptions)\b",
    ),
    _feature(
        "authority claim",
        2,
        (
            "mode override overrides instruction instructions command commands directive "
            "directives message messages order orders update updates operating running "
            "working acting",
        ),
        r"\b(?:developer|god|jailbreak|dan|unrestricted|unfiltered|sudo) mode\b"
        r"|\b(?:you are|you're) (?:now )?(?:operating|running|working|acting) in (?:a )?"
        r"[a-z]{2,20}+ mode\b"
        r"|\b(?:system|admin(?:istrator)?|developer|root|openai|anthropic) (?:override|"
        r"instruction|command|directive)s?\b"
        r"|\b(?:instruction|message|command|directive|order|update)s? from (?:your|the) "
        r"(?:developers?|creators?|makers?|operators?|owners?|programmers?|trainers?)\b",
    ),
    _feature(
        "disables safeguards",
        2,
        ("skip disable ignore bypass turn switch remove", "safety security content"),
        r"\b(?:skip|disable|ignore|bypass|turn off|switch off|remove) (?:all |any |the |your )?"
        r"(?:safety|security|content) (?:checks|filters?|guidelines|rules|restrictions|"
        r"policies|measures|guardrails)\b",
    ),
    _feature(
        "decode and follow",
        3,
        (
            "decode decipher decrypt unscramble translate convert read follow execute obey carry",
            (
                "base b rot hex hexadecimal binary morse caesar ascii encoded hidden decoded "
                "embedded secret"
            ),
        ),
        r"\b(?:decode|decipher|decrypt|unscramble|translate|convert|read)\b"
        + gap(6)
        + r"(?:base-?64|b64|rot-?13|hex(?:adecimal)?|binary|morse|caesar|ascii codes?)\b"
        + gap(8)
        + r"(?:follow|execute|obey|run|carry out|perform|do what|act on|comply)"
        r"|\b(?:follow|execute|obey|carry out) (?:the )?(?:encoded|hidden|base-?64|"
        r"decoded|embedded|secret) (?:instructions?|commands?|text|message)\b",
    ),
    # Referring to the reader's own answer or code as something to change.
    _feature(
        "refers to the answer",
        2,
        ("your", OUTPUT_WORDS),
        r"\b(?:in|into|to|within|throughout|from|of|on|at the (?:start|end|beginning|top|"
        r"bottom) of)\s(?:all |each |every )?your (?:(?:final|next|own|entire|whole) )?"
        r"(?:" + OUTPUT_STRONG + r"|" + CODE_OUTPUT + r")s?(?:'s)?\b"
        r"|\b"
        + DIRECT_SHAPING
        + r" (?:all |each |every )?your (?:"
        + OUTPUT
        + r"|"
        + CODE_OUTPUT
        + r")s?\b"
        r"|\b(?:provide|give|write|deliver|present|compose|craft|phrase|produce|return|"
        r"render|output|format|structure) your (?:"
        + OUTPUT
        + r"|message)s? (?:using|in|with|without|"
        r"as|entirely|only|backwards)\b"
        r"|\byour (?:" + OUTPUT_STRONG + r")'s\b",
    ),
    _feature(
        "refers to the answer",
        1,
        ("your", OUTPUT_WORDS),
        r"(?<!forward )\b(?:in|into|to|within|throughout|from|of)\s(?:all |each |every )?your "
        r"(?:reply|replies|message|explanation|translation|result|analysis)(?:'s)?\b"
        r"|\byour (?:" + OUTPUT_STRONG + r"|" + CODE_OUTPUT + r")s?\b",
    ),
    _feature(
        "refers to code to insert",
        1,
        (
            (
                "code snippet snippets excerpt excerpts script scripts block blocks section "
                "sections lines line payload payloads command commands"
            ),
        ),
        r"\b(?:the |this |these )?(?:following|subsequent|below|above|attached|provided|"
        r"given|this|these|next) (?:(?:python|javascript|js|bash|shell|powershell|sql|short|"
        r"small|simple|little|piece of) ){0,2}(?:code|snippets?|excerpts?|scripts?|blocks?|"
        r"sections?|lines? of code|payloads?|commands?)\b",
    ),
    _feature(
        "from now on",
        1,
        ("now all every anything",),
        r"\bfrom now on\b|\b(?:in|for|to) (?:all|every|each) (?:future |later |of your )?"
        r"(?:replies|responses|answers|messages|outputs|reply|response|answer|message|output|"
        r"questions?|requests?|quer(?:y|ies)|prompts?|emails?)\b|\bbefore (?:doing )?anything "
        r"else\b",
    ),
    _feature(
        "before answering",
        1,
        ("before when while after",),
        r"\b(?:before|when|while|after) (?:you )?(?:reply|replying|respond|responding|answer|"
        r"answering|summari[sz]e|summari[sz]ing|writing your|drafting your)\b",
    ),
    _feature("imperative", 1, (), START + SHAPING_VERBS + r"\b"),
    _feature("imperative", 1, (), LEAD_CLAUSE + SHAPING_VERBS + r"\b"),
    _feature(
        "content to insert",
        1,
        (
            (
                "add include insert append prepend integrate incorporate embed inject weave "
                "mention put place attach promote link point direct suggest recommend"
            ),
        ),
        r"\b(?:add|include|insert|append|prepend|integrate|incorporate|embed|inject|weave|"
        r"mention|put|place|attach)\b" + gap(4) + CONTENT_NOUNS + r"\b"
        r"|\b(?:add|include|insert|append|prepend|integrate|incorporate|embed|inject|mention|"
        r"promote|link to|point to|direct (?:users|readers|people) to|suggest|recommend)\b"
        + gap(8)
        + r"(?:(?:(?<=[\"“])|[\"“])[^\"”\n]{3,200}+[\"”]|https?://|www\.|"
        r"[a-z0-9-]{2,63}+\.(?:com|net|org|io|xyz|info|biz|co|app|site|online)\b)",
    ),
    _feature(
        "manipulation or audience words",
        1,
        (),
        r"\b(?:typos?|misspell\w{0,8}+|anagram\w{0,8}+|scrambl\w{0,8}+|jumbl\w{0,8}+|vowels?|"
        r"consonants?|letters|alphanumeric|homophon\w{0,8}+|substitution|leet ?speak|"
        r"pig latin|all caps|uppercase|capital letters|backwards|in reverse|emojis?|spaces|"
        r"punctuation|every (?:other|second|third|fourth|fifth|[0-9]{1,2}(?:st|nd|rd|th)?) "
        r"(?:word|letter|character|sentence)s?|in (?:groups|sets) of|rhym\w{0,4}+|"
        r"users?|readers?|viewers?|audience)\b",
    ),
)
# Features that mean "this text talks to a model": elsewhere in the same text, 2 is enough.
MODEL_SIGNALS = frozenset({"addresses the model", "new instructions", "override"})
# Amplifiers: common in ordinary mail, they count only in a sentence with another _feature.
_SUPPORTING_NAMES = frozenset(
    {"imperative", "urgency", "content to insert", "manipulation or audience words",
     "from now on", "before answering",
     "sensitive data request", "refers to code to insert"}
)  # fmt: skip
PRIMARY = tuple(f for f in _INJECTION_FEATURES if f.name not in _SUPPORTING_NAMES)
SUPPORTING = tuple(f for f in _INJECTION_FEATURES if f.name in _SUPPORTING_NAMES)

TASK_FEATURES = (
    _feature(
        "task to write or explain",
        2,
        (),
        START + r"(?:write|compose|draft|generate|create|develop|produce|explain|describe|define|"
        r"summari[sz]e|translate|provide|give|list|outline|break down|elaborate on|discuss|"
        r"compare|analy[sz]e|solve|calculate|compute|name|tell me|show me|teach me|help me "
        r"(?:write|understand))\b" + gap(6) + r"(?:" + ARTIFACTS + r"|" + KNOWLEDGE + r")",
    ),
    _feature(
        "knowledge question",
        2,
        ("what who whom which where when why how",),
        START + r"(?:what|who|whom|which|where|when|why|how)(?:'s|\s)[^\n.?!]{2,200}+\?",
    ),
    _feature(
        "translation request",
        2,
        (LANGUAGE_WORDS,),
        r"\btranslate\b[^\n.!?]{0,80}\b(?:to|into|in) " + LANGUAGES + r"\b"
        r"|\b(?:how do (?:you|i) say|what(?: is|'s)) [\"'“‘][^\"'”’\n]{1,80}+[\"'”’] in "
        + LANGUAGES
        + r"\b"
        r"|\b" + LANGUAGES + r" (?:equivalent|translation|word) (?:for|of)\b",
    ),
    _feature(
        "task to write or explain",
        2,
        ("can", "you", "show tell give explain write teach help"),
        r"\bcan you (?:show|tell|give|explain|write|teach|help) me\b"
        + gap(6)
        + r"(?:"
        + ARTIFACTS
        + r"|"
        + KNOWLEDGE
        + r")",
    ),
)
PERSONAL = re.compile(
    r"\b(?:i|me|my|mine|we|us|our|ours|you|your|yours|you're|we're|i'm|i've|we've|i'd|"
    r"you'll|we'll|i'll)\b"
)
QUOTED = re.compile(r"[\"“‘'][^\"”’'\n]{0,200}+[\"”’']")
KNOWLEDGE_RE = re.compile(KNOWLEDGE)
WORDS = re.compile(r"[a-z]+")

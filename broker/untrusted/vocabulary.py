"""The words and phrase shapes the detector's features are built from.

General English, not strings from any corpus: what a model is called, the verbs that shape an
answer, the nouns for credentials and private data, where data can be sent. Every pattern
here is a piece of a regular expression that runs on lower-cased text; repetitions are bounded
and runs that could be re-split are possessive, so the features stay linear.
"""

from __future__ import annotations

W = r"[a-z0-9'’_-]{1,30}+"  # one word
SEP = r"[^a-z0-9\n.!?]{1,4}+"  # what separates words inside one sentence


def gap(words: int) -> str:
    """Up to ``words`` words and the separators around them, inside one sentence."""
    return rf"(?:{SEP}{W}){{0,{words}}}{SEP}"


def any_of(*alternatives: str) -> str:
    """A non-capturing group of regex alternatives."""
    return "(?:" + "|".join(alternatives) + ")"


# The start of a line, or of a sentence: after . ! ? : ; and a space ("invoices.list" is not
# one), or after "|".
BEGIN = r"(?:^|(?<=[.!?:;]\s)|(?<=\|))"
# Where a sentence starts, plus the politeness and lead-in clauses an imperative may follow.
START = (
    BEGIN + r"[\s\"'“‘(\[*>#•-]{0,6}+"
    r"(?:(?:please|kindly|also|now|then|and|so|just|first|finally|additionally|next|lastly|"
    r"be sure to|make sure to|remember to|you must|you should|you need to|you have to)"
    r"[\s,]{1,3}+){0,2}"
)
LEAD_CLAUSE = r"(?<=,)\s{0,3}+(?:please\s{1,3}+)?"

# What a model is called. Product names are kept out of greetings: "Hi Claude," is a person.
MODEL_GENERIC = any_of(
    r"ai|llms?|(?:large )?language models?|ai (?:assistant|agent|model|system|reader|tool|"
    r"service|bot)s?|"
    "(?:virtual|email|digital|helpful|mail|inbox) assistants?|assistants?|chat ?bots?|"
    "summari[sz]ers?|automated (?:reader|system|agent|assistant|process|tool|pipeline|parser)s?"
)
MODEL = any_of(
    MODEL_GENERIC, r"chatgpt", r"gpt(?:-?\d[\w.-]{0,8}+)?", "claude", "gemini", "copilot"
)
# After a name of the model: punctuation, possibly after "reading this email" and the like.
VOCATIVE_END = (
    r"(?= (?:of|reading|processing|handling|summari[sz]ing|parsing) (?:this|these|the) "
    r"(?:email|message|thread|document|text|page|mail|conversation)s?\s{0,2}+[,.:;!)—-]"
    r"|\s{0,2}+(?:[,.:;!)—-]|$))"
)
# The words any of the model names above is made of (for Feature.needs).
MODEL_WORDS = (
    "ai llm llms language assistant assistants chatbot chatbots chat bot bots chatgpt gpt "
    "claude gemini copilot agent agents model models summarizer summarizers summariser "
    "summarisers automated reader readers"
)
MODEL_WEAK = any_of(r"agents?", r"models?", r"bots?")
# Every noun the "refers to the answer" patterns end in (for Feature.needs).
OUTPUT_WORDS = (
    "response responses answer answers output outputs completion completions summary summaries "
    "summarization summarisation summarizations summarisations reply replies code codes "
    "codebase codebases base solution solutions implementation implementations algorithm "
    "algorithms program programs script scripts elucidation elucidations logic logics "
    "function functions message messages explanation translation result analysis"
)
OUTPUT = any_of("response|answer|output|completion|summary|summari[sz]ation|reply")
# "in your summary/reply" is also how colleagues write; "in your response/answer" less so.
OUTPUT_STRONG = any_of("response|answer|output|completion")
CODE_OUTPUT = any_of(
    "code|codebase|code base|solution|implementation|algorithm|program|script|elucidation|"
    "logic|function"
)
SHAPING_VERBS = any_of(
    "add|include|insert|append|prepend|integrate|incorporate|embed|inject|weave|blend|"
    "merge|fuse|meld|infuse|interweave|mention|modify|augment|enhance|enrich|rewrite|"
    "rephrase|replace|substitute|convert|translate|encode|use|utili[sz]e|employ|leverage|"
    "provide|render|respond|answer|reply|output|print|say|state|introduce|misspell|"
    "scramble|jumble|rearrange|reverse|remove|omit|combine|group|format|structure|end|"
    "begin|start|conclude|finish|suggest|recommend|encourage|urge|invite|remind|promote|"
    "advertise|tease|hint|claim|pretend|act|ensure|make|keep|consider|remember|always|"
    "never|only|execute|run|express|highlight|stress|emphasi[sz]e|offer|direct|point|let|"
    "harmoni[sz]e|absorb|engage|enlist|seamlessly|don't forget|do not forget|"
    "don't hesitate|do not hesitate|write|generate|create|tell|inform|warn|alert|change|"
    "alter|adjust|edit|tailor|shape|mix|sprinkle|attach|anagram|capitali[sz]e|spell|"
    "abbreviate|swap|shuffle|split|join|repeat|count|list|rate|mark|delete|move|approve|"
    "schedule|forward|send"
)
DIRECT_SHAPING = any_of(
    "modify|augment|enhance|enrich|rewrite|rephrase|reformat|format|end|begin|start|"
    "conclude|prefix|preface|translate|encode|structure|alter|change|adjust|edit|tailor|"
    "finish|spice up|fortify|optimi[sz]e|refine|complement|improve"
)
CONTENT_NOUNS = any_of(
    "sentences?|paragraphs?|lines?|phrases?|statements?|notes?|reminders?|tips?|reasons?|"
    "appeals?|recommendations?|suggestions?|disclaimers?|headlines?|links?|hyperlinks?|"
    "references?|mentions?|slogans?|taglines?|call to action|advertisements?|promotions?|"
    "jokes?|quotes?|signatures?|footers?|banners?|warnings?|greetings?|messages?|words?|"
    r"teasers?|claims?|invitations?|requests?|postscripts?|p\.s\."
)
SENSITIVE = any_of(
    "passwords?|passcodes?|pins?|credentials?|api[ _-]?keys?|secret(?: keys?)?s?|"
    "access tokens?|auth(?:entication)? tokens?|tokens?|private keys?|ssh keys?|cookies?|"
    "session (?:ids?|tokens?|cookies?)|(?:chat|conversation|message|browsing|"
    "search) history|conversations?|system prompt|(?:initial|original|hidden|"
    "previous) (?:prompt|instructions)|inbox|mailbox|(?:(?:all|every|recent|other|"
    "the user's|user's|their|my|his|her|the recipient's|recipient's) )(?:(?:recent|last|"
    "latest|past|private|personal|saved) )?(?:emails?|messages?|files?|documents?|"
    "contacts?|data|attachments?|calendar(?: events?)?|invoices?|receipts?|statements?|"
    "orders?|records?|notes?|photos?|(?:home )?address(?:es)?|location|chats?)|"
    "contacts?(?: list)?|address book|"
    "personal (?:data|information|details)|user data|(?:credit|debit) card (?:numbers?|"
    "details)|card numbers?|bank(?:ing)? (?:details|credentials|information|login)|"
    "account (?:details|credentials|passwords?|logins?)|social security numbers?|ssns?|"
    "one[ -]time (?:codes?|passwords?|pass ?codes?)|otps?|(?:2fa|mfa|verification|"
    "security|authentication) codes?|env(?:ironment)? variables?|seed phrases?|"
    "recovery (?:phrases?|codes?)"
)
SEND_VERBS = any_of(
    "send|forward|e-?mail|mail|post|upload|transmit|transfer|share|leak|exfiltrate|reveal|"
    "disclose|expose|dump|copy|bcc|deliver|submit|relay|sync|paste|text|message|dm|export|"
    "append|push|attach|save|back up|backup"
)
DESTINATION = any_of(
    r"[a-z0-9._%+-]{1,64}+@[a-z0-9-]{1,63}+\.|https?://|www\.|this (?:address|email|e-mail|"
    "url|link|number|server|endpoint|site|website|account)|the (?:following|below|above|"
    r"address|email|url|link|server|endpoint)|(?:me|us)\b|[a-z0-9-]{2,63}+\.(?:com|net|org|"
    r"io|xyz|ru|cn|info|biz|co|me|top|site|online)\b"
)
LANGUAGE_WORDS = (
    "english french spanish german italian portuguese dutch russian japanese chinese mandarin "
    "cantonese korean arabic hindi turkish polish swedish norwegian danish finnish greek hebrew "
    "latin ukrainian czech vietnamese thai indonesian persian swahili"
)
LANGUAGES = any_of("|".join(LANGUAGE_WORDS.split()))
ARTIFACTS = any_of(
    "poems?|stor(?:y|ies)|essays?|speech(?:es)?|letters?|introductions?|conclusions?|"
    "summar(?:y|ies)|articles?|blog posts?|songs?|lyrics|haikus?|limericks?|jokes?|"
    "examples?|functions?|programs?|scripts?|snippets?|quer(?:y|ies)|algorithms?|"
    "explanations?|descriptions?|definitions?|outlines?|paragraphs?|sentences?|"
    "translations?|equivalents?|recipes?|tweets?|riddles?|dialogues?|overviews?|"
    "tutorials?|guides?"
)
KNOWLEDGE = (
    r"(?:the |a )?(?:process|theory|history|plot|life ?cycle|meaning|concept|importance|"
    r"benefits?|causes?|effects?|role|functions?|differences?|structure|origins?|principles?|"
    r"basics|significance|mechanism|stages?|steps|types|laws?|rules) (?:of|between|behind)\b"
    r"|how (?:" + W + r" ){0,3}(?:works?|functions?|operates?|happens?)\b"
)
